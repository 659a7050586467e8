//! `olc keys`: the participant's identity.

use std::path::Path;

use anyhow::{Context, Result};
use olc_content::keyfile;
use olc_protocol::Identity;
use serde::Serialize;

use crate::cli::{KeysCommand, KeysNew, KeysShow};
use crate::paths;

#[derive(Debug, Serialize)]
struct KeyInfo<'a> {
    path: &'a Path,
    public_key: String,
    peer_id: String,
}

impl<'a> KeyInfo<'a> {
    fn of(path: &'a Path, identity: &Identity) -> Self {
        Self {
            path,
            public_key: identity.public_key().to_string(),
            peer_id: identity.peer_id().to_string(),
        }
    }

    fn print(&self, json: bool, heading: &str) -> Result<()> {
        if json {
            println!("{}", serde_json::to_string_pretty(self)?);
        } else {
            println!("{heading} {}", self.path.display());
            println!("public key: {}", self.public_key);
            println!("peer id:    {}", self.peer_id);
        }
        Ok(())
    }
}

pub fn run(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::New(args) => new(args),
        KeysCommand::Show(args) => show(args),
    }
}

fn new(args: KeysNew) -> Result<()> {
    let path = paths::key_file(args.out)?;
    let identity = Identity::generate()?;
    keyfile::save(&identity, &path, args.force).context("cannot create the key")?;
    tracing::debug!(path = %path.display(), "wrote key file");
    KeyInfo::of(&path, &identity).print(args.json, "created key (readable by you only):")
}

fn show(args: KeysShow) -> Result<()> {
    let path = paths::key_file(args.key)?;
    let identity = keyfile::load(&path)?;
    KeyInfo::of(&path, &identity).print(args.json, "key:")
}
