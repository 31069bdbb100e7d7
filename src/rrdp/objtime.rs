//! The time an RPKI object was made, read from the object itself: a certificate's notBefore,
//! a CRL's thisUpdate, a signed object's CMS signing time.
//!
//! The rsync export gives each file this modification time (as krill-sync does), so an rsync
//! client comparing size and time does not fetch an unchanged object again just because the
//! tree was written anew. Only as much DER is read as leads to the field; anything
//! unexpected gives `None` (the file then keeps the time it was written).

/// Seconds since the epoch at which the object was made, by its file name's extension.
pub fn made_at(name: &str, der: &[u8]) -> Option<i64> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    match ext.as_str() {
        "cer" => certificate_not_before(der),
        "crl" => crl_this_update(der),
        "mft" | "roa" | "asa" | "gbr" | "sig" | "tak" | "spl" | "aspa" => cms_signing_time(der),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]`, constructed.
const CONTEXT_0: u8 = 0xA0;

/// id-signingTime, 1.2.840.113549.1.9.5, as DER content bytes.
const SIGNING_TIME: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x05];

/// One DER element: its tag and content, and what follows it.
fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    if tag & 0x1F == 0x1F {
        return None; // multi-byte tags do not occur on the paths we walk
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7F) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The content of an element with the expected tag, and what follows it.
fn expect(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(data)?;
    (t == tag).then_some((content, rest))
}

/// Skips one element of any tag.
fn skip(data: &[u8]) -> Option<&[u8]> {
    tlv(data).map(|(_, _, rest)| rest)
}

fn certificate_not_before(der: &[u8]) -> Option<i64> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&CONTEXT_0) {
        rest = skip(rest)?; // version
    }
    let (_, rest) = expect(rest, INTEGER)?; // serialNumber
    let rest = skip(rest)?; // signature
    let rest = skip(rest)?; // issuer
    let (validity, _) = expect(rest, SEQUENCE)?;
    time(validity)
}

fn crl_this_update(der: &[u8]) -> Option<i64> {
    let (crl, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(crl, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&INTEGER) {
        rest = skip(rest)?; // version
    }
    let rest = skip(rest)?; // signature
    let rest = skip(rest)?; // issuer
    time(rest)
}

fn cms_signing_time(der: &[u8]) -> Option<i64> {
    let (content_info, _) = expect(der, SEQUENCE)?;
    let (_, rest) = expect(content_info, OID)?;
    let (explicit, _) = expect(rest, CONTEXT_0)?;
    let (signed_data, _) = expect(explicit, SEQUENCE)?;
    let (_, rest) = expect(signed_data, INTEGER)?; // version
    let (_, rest) = expect(rest, SET)?; // digestAlgorithms
    let (_, mut rest) = expect(rest, SEQUENCE)?; // encapContentInfo
                                                 // Optional certificates [0] and crls [1], then signerInfos.
    while let Some((tag, _, after)) = tlv(rest) {
        if tag == SET {
            break;
        }
        rest = after;
    }
    let (signer_infos, _) = expect(rest, SET)?;
    let (signer, _) = expect(signer_infos, SEQUENCE)?;
    let (_, rest) = expect(signer, INTEGER)?; // version
    let rest = skip(rest)?; // sid
    let rest = skip(rest)?; // digestAlgorithm
    let (mut attrs, _) = expect(rest, CONTEXT_0)?; // signedAttrs, IMPLICIT SET
    while !attrs.is_empty() {
        let (attr, after) = expect(attrs, SEQUENCE)?;
        let (oid, values) = expect(attr, OID)?;
        if oid == SIGNING_TIME {
            let (values, _) = expect(values, SET)?;
            return time(values);
        }
        attrs = after;
    }
    None
}

/// A UTCTime or GeneralizedTime (whole seconds, `Z`) as seconds since the epoch.
fn time(data: &[u8]) -> Option<i64> {
    let (tag, content, _) = tlv(data)?;
    let text = std::str::from_utf8(content).ok()?;
    let digits = text.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME if digits.len() == 12 => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        GENERALIZED_TIME if digits.len() == 14 => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |i: usize| -> i64 { rest[i..i + 2].parse().unwrap_or(0) };
    let (month, day, hour, min, sec) = (field(0), field(2), field(4), field(6), field(8));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn times_parse() {
        let utc = [&[UTC_TIME, 13][..], b"240229120000Z"].concat();
        assert_eq!(time(&utc), Some(1_709_208_000));
        let gen = [&[GENERALIZED_TIME, 15][..], b"20500101000000Z"].concat();
        assert_eq!(time(&gen), Some(2_524_608_000));
        assert_eq!(time(&[UTC_TIME, 2, b'1', b'Z']), None);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }

    #[test]
    fn real_krill_objects_have_their_times() {
        // A Krill 0.16 snapshot (the fuzz seed): every certificate, CRL, manifest and ROA in
        // it must give a time between 2020 and 2100.
        let snapshot = include_str!("../../fuzz/seeds/content/krill-snapshot.xml");
        let mut seen = std::collections::BTreeMap::new();
        for part in snapshot.split("<publish ").skip(1) {
            let uri = part
                .split("uri=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            let b64: String = part
                .split('>')
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            let ext = uri.rsplit('.').next().unwrap().to_string();
            let t = made_at(uri, &der).unwrap_or_else(|| panic!("no time for {uri}"));
            assert!((1_577_836_800..4_102_444_800).contains(&t), "{uri}: {t}");
            // Two checked against openssl (x509 -startdate, crl -lastupdate).
            if uri.ends_with("B4697F77EA21EAFB38E7FDD3361DB188E6020982.cer") {
                assert_eq!(t, 1_795_392_529, "notBefore Nov 23 00:08:49 2026 GMT");
            }
            if uri.ends_with("1861D485A093CAD98AB4689E2311F53E9F42EEB7.crl") {
                assert_eq!(t, 1_795_392_532, "thisUpdate Nov 23 00:08:52 2026 GMT");
            }
            *seen.entry(ext).or_insert(0) += 1;
        }
        for ext in ["cer", "crl", "mft", "roa"] {
            assert!(seen.contains_key(ext), "the seed has a .{ext}: {seen:?}");
        }
        assert_eq!(made_at("x.txt", b"anything"), None);
        assert_eq!(made_at("x.cer", b"\x30\x03garbage"), None);
    }
}
