//! Live progress on stderr while checks run: one indicatif spinner per running check, fed by
//! [`preflight::target::Ctx::progress`], replaced by a one-line result when it finishes. Only
//! used when stderr is a terminal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use preflight::engine::run::Progress;
use preflight::outcome::Status;
use preflight::target::ProgressFn;

/// Spinners on stderr.
pub struct Spinners {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Default for Spinners {
    fn default() -> Self {
        Self::new()
    }
}

impl Spinners {
    pub fn new() -> Self {
        Spinners {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Progress for Spinners {
    fn message(&self, msg: &str) {
        let _ = self.multi.println(format!("· {msg}"));
    }

    fn started(&self, id: &str) -> ProgressFn {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {elapsed} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(id.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        self.bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), bar.clone());
        Arc::new(move |msg: &str| bar.set_message(msg.to_string()))
    }

    fn finished(&self, id: &str, status: Status, summary: &str) {
        let bar = self
            .bars
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(bar) = bar {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let _ = self
            .multi
            .println(format!("{:<5} {id}: {summary}", status.as_str()));
    }
}
