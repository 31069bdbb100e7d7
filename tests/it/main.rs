//! Integration tests: the real server on 127.0.0.1 against a fake origin on 127.0.0.1.
//! One binary, so it links once.

mod support;

mod cli;
mod clients;
mod cluster;
mod durability;
mod erik;
mod exports;
mod failover;
mod faults;
mod fuzz_replay;
mod history;
mod hostile;
mod layers;
mod lean;
mod lifecycle;
mod serving;
mod syncing;
mod tls;
mod validation;
