//! `agora publish DIR`: put a directory's files on the node as one dataset
//! and announce them, so that jobs anywhere on the network can take them as
//! inputs (`agora job submit --inputs-id ID`) and providers fetch them from
//! this node, or from whoever fetched them before, instead of from the
//! submitting node.

use std::path::PathBuf;
use std::process::ExitCode;

use agora_protocol::dataset::DatasetFile;
use anyhow::{Context, bail};

use super::common::{NodeLocator, block_on, emitln, print_json, size};
use super::job::inputs::{Symlinks, inputs_in_dir};
use super::job::submit::upload_inputs;
use crate::api::PublishRequest;
use crate::api::server::MAX_UPLOAD;

/// Publish a directory's files as a dataset: one task input per file for
/// `agora job submit --inputs-id ID`.
///
/// The regular files directly in DIR (not hidden ones, not subdirectories)
/// are uploaded to the node, which keeps them (they are never collected)
/// and announces them and the dataset's manifest in the DHT, again at every
/// start. Prints the dataset's id (with `--json`: `{"id", "files",
/// "bytes"}`); the same files always give the same id.
#[derive(Debug, clap::Args)]
pub struct PublishCommand {
    /// The directory whose files make up the dataset.
    pub dir: PathBuf,
    /// Read files that are symbolic links (to regular files).
    #[arg(long)]
    pub follow_symlinks: bool,
    /// Print JSON: the dataset's `id`, its `files` and total `bytes`.
    #[arg(long)]
    pub json: bool,
    /// The node to publish on.
    #[command(flatten)]
    pub node: NodeLocator,
}

impl PublishCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let links = if self.follow_symlinks {
            Symlinks::Follow
        } else {
            Symlinks::Refuse
        };
        let files = inputs_in_dir(&self.dir, links)?;
        if let Some(f) = files.iter().find(|f| f.size > MAX_UPLOAD as u64) {
            bail!(
                "{} is {}, more than the {} one file of a dataset may be",
                f.path.display(),
                size(f.size),
                size(MAX_UPLOAD as u64)
            );
        }
        let client = self.node.client()?;
        let view = block_on(async move {
            let uploaded = upload_inputs(&client, &files, links).await?;
            let req = PublishRequest {
                files: uploaded
                    .into_iter()
                    .map(|i| DatasetFile {
                        name: i.name,
                        id: i.id,
                        size: i.size,
                    })
                    .collect(),
            };
            client.publish(&req).await.context("the node refused the dataset")
        })??;
        if self.json {
            print_json(&view)?;
        } else {
            emitln(&view.id.to_string())?;
            eprintln!(
                "published {} file(s), {}; run a job over them with `agora job submit MODULE --inputs-id {}`",
                view.files.len(),
                size(view.bytes),
                view.id
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
