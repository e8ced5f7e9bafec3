//! The senders against fake providers that speak the real protocols and verify what they get.

#[path = "../support/mod.rs"]
mod support;

mod apns;
mod config;
mod fakes;
mod fcm;
mod helpers;
mod npm;
mod webpush;
