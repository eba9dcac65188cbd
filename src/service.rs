//! The bundled core service (`preflight serve`): a market price-correlation service that
//! implements every hardening feature for real. It is preflight's default target.
//!
//! It must not import anything from the rest of preflight except the leaf utilities
//! [`crate::units`] and [`crate::yaml`]: checks see it only over HTTP, signals and files,
//! as they see a user's service.

use std::path::{Path, PathBuf};

/// Options of `preflight serve`, each overriding the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: PathBuf,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub admin_token: Option<String>,
}

/// Runs the service until SIGTERM or Ctrl-C.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    anyhow::bail!(
        "the core service is not built yet (config {})",
        opts.config.display()
    )
}

/// The one-line status read from the service's SQLite store.
pub fn status_line(data_dir: &Path, format: &str) -> anyhow::Result<String> {
    anyhow::bail!("status is not built yet ({}, {format})", data_dir.display())
}
