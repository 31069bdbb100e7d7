#!/usr/bin/env python3
# Writes debian/rrdp-proxy.conf, the package's /etc/rrdp-proxy/rrdp-proxy.conf: a deployment
# in front of Krill, every key of docs/configuration.md present, the ones not set commented
# out with their default (from the binary's own `config`, or the reference). The test
# cli::the_packaged_config_names_every_key_with_its_true_default keeps it honest.
#
#   scripts/packaged-config.py target/debug/rrdp-proxy
import re, subprocess, sys, tempfile, textwrap, tomllib
KRILL = '''[server]
listen = ["127.0.0.1:8080"]
admin_listen = "127.0.0.1:9090"
threads = 2
[cache]
dir = "/var/lib/rrdp-proxy"
[[repository]]
public = "https://rrdp.example.net/rrdp/"
upstream = "http://127.0.0.1:3000/rrdp/"
[[passthrough]]
public = "https://rrdp.example.net/ta/"
upstream = "http://127.0.0.1:3000/ta/"
[cluster]
peers = ["https://node2.example.net/"]
token = "replace-with-a-shared-secret-of-32-characters"
'''
with tempfile.NamedTemporaryFile('w', suffix='.toml') as f:
    f.write(KRILL); f.flush()
    effective = subprocess.run([sys.argv[1], 'config', '--config', f.name], check=True, capture_output=True, text=True).stdout
doc=open('docs/configuration.md').read()
eff=tomllib.loads(effective)
def toml_value(v):
    if isinstance(v,bool): return 'true' if v else 'false'
    if isinstance(v,int): return str(v)
    if isinstance(v,str): return '"'+v.replace('\\','\\\\').replace('"','\\"')+'"'
    if isinstance(v,list): return '['+', '.join(toml_value(x) for x in v)+']'
    raise ValueError(v)
sections={}; cur=None
for line in doc.split('\n'):
    m=re.match(r'^## `\[\[?(\w+)\]\]?`',line)
    if m: cur=m.group(1); sections[cur]=[]; continue
    if cur and line.startswith('| key |'):
        header=[c.strip() for c in line.strip().strip('|').split(' | ')]
    if cur and line.startswith('| `'):
        cells=[c.strip() for c in line.strip().strip('|').split(' | ')]
        keys=re.findall(r'`([a-z_]+)`', cells[0])
        default, meaning = cells[header.index('default')], cells[header.index('meaning')]
        meaning=re.sub(r'`([^`]*)`', r'\1', meaning); meaning=re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', meaning)
        first=re.split(r'(?<=\.)\s', meaning, maxsplit=1)[0]
        for k in keys: sections[cur].append((k, default, first))
active={'server':{'listen','admin_listen'},'cache':{'dir'},'repository':{'public','upstream'}}
examples={'tls_cert':'"/etc/rrdp-proxy/fullchain.pem"','tls_key':'"/etc/rrdp-proxy/privkey.pem"','admin_token':'"<openssl rand -hex 16>"',
 'disk_limit':'"50GiB"','max_stale':'"15m"','access_file':'"/var/log/rrdp-proxy/access.log"','max_deltas':'100','min_objects':'10','max_shrink':'50',
 'export_rrdp':'"/var/www/rrdp"','export_rsync':'"/var/lib/rrdp-proxy-rsync"','tal':'"/etc/rrdp-proxy/ta.tal"','pre_validate':'["/usr/local/bin/check", "--strict"]',
 'upstream_ca':'"/etc/rrdp-proxy/krill-ca.pem"','ca':'"/etc/rrdp-proxy/peers-ca.pem"','threads':None,'upgrade_sock':'"/var/lib/rrdp-proxy/upgrade.sock"'}
def simple_default(d):
    if '<' in d: return None
    m=re.fullmatch(r'`([^`]+)`', d.strip())
    if not m: return None
    t=m.group(1)
    if t in ('true','false') or re.fullmatch(r'\d+',t) or t.startswith('['): return t
    if t.startswith('"'): return t
    return '"'+t+'"'
headers={'server':'[server]','cache':'[cache]','log':'[log]','health':'[health]','repository':'[[repository]]','passthrough':'[[passthrough]]','cluster':'[cluster]'}
notes={
 'server':"Plain HTTP on loopback here, for a TLS front end (nginx, a load balancer) or a first\n# test; to serve RPs directly over TLS set tls_listen, tls_cert and tls_key (see\n# examples/krill-tls.conf).",
 'repository':"Krill's RRDP tree: public is Krill's rrdp_base_uri (where RPs are told to fetch), upstream\n# is Krill. Krill listens with TLS by default: then upstream = \"https://127.0.0.1:3000/rrdp/\"\n# and upstream_ca = its certificate (or upstream_insecure = true for a lab).",
 'passthrough':"Krill's /ta/ tree (the TA certificate and TAL), cached and served stale while Krill is\n# down. To use it, remove the \"#\" before the header and the keys you set.",
 'cluster':"Other nodes serving the same repositories (peer fill). To use it, remove the \"#\" before the\n# header, peers and token.",
}
out=['''# /etc/rrdp-proxy/rrdp-proxy.conf: rrdp-proxy in front of Krill on this host.
#
# Every key is here. The ones a deployment in front of Krill must set are set; the others are
# commented out with their default (remove the "#" to change one). The reference, with the
# constraints each value must meet, is rrdp-proxy.conf(5); examples for other deployments are
# in /usr/share/doc/rrdp-proxy/examples/. `rrdp-proxy config` prints what is in force.
#
# After editing:  rrdp-proxy check --config /etc/rrdp-proxy/rrdp-proxy.conf
#                 systemctl enable --now rrdp-proxy   (the package does not start it)
#
# Durations: "500ms", "10s", "5m", "2h", "1d". Sizes: "4096", "512KiB", "256MiB", "4GiB".''']
for sec in ['server','cache','log','health','repository','passthrough','cluster']:
    out.append('')
    if sec in notes: out.append('# '+notes[sec])
    optional = sec in ('passthrough','cluster')
    out.append(('# ' if optional else '')+headers[sec])
    table=eff.get(sec); table=table[0] if isinstance(table,list) else (table or {})
    for k,default,first in sections[sec]:
        for l in textwrap.wrap(first, 92): out.append('# '+l)
        if sec in active and k in active[sec]:
            out.append(f'{k} = {toml_value(table[k])}'); continue
        if k=='threads':
            out.append('# threads = 2                 (default: the number of CPUs)'); continue
        v = simple_default(default)
        if v is None and k in table and k not in examples: v = toml_value(table[k])
        if v is None: v = examples.get(k) or '(none)'
        if v is None: v='(none)'
        suffix = '' if simple_default(default) is not None or (k in table and k not in examples) else '   # default: '+re.sub('`','',default)
        out.append(f'# {k} = {v}{suffix}')
open('debian/rrdp-proxy.conf','w').write('\n'.join(out)+'\n')
