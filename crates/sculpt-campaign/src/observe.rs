//! Observers of a running campaign. The executor reports to them; they never change what
//! it does. `ProgressBar` is the terminal view: trials done, ETA and best hypervolume.

use std::time::Duration;

use sculpt_store::TrialRecord;

/// How far a campaign has come, after a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub failed: usize,
    /// Hypervolume of all completed trials so far (see `sculpt_report::hypervolume`).
    pub hypervolume: f64,
    /// Best accuracy among completed trials within the latency budget (or overall).
    pub best_accuracy: Option<f64>,
}

pub trait Observer {
    /// Called once before the first new trial; `done` trials were stored earlier.
    fn on_start(&mut self, _campaign: &str, _done: usize, _total: usize) {}
    /// A phase that takes a while without trials, such as training the teacher.
    fn on_phase(&mut self, _message: &str) {}
    fn on_trial(&mut self, _trial: &TrialRecord, _progress: &Progress) {}
    fn on_finish(&mut self, _progress: &Progress) {}
}

/// An indicatif progress bar on standard error.
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressBar {
    pub fn new() -> Self {
        ProgressBar { bar: None }
    }
}

impl Default for ProgressBar {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for ProgressBar {
    fn on_phase(&mut self, message: &str) {
        eprintln!("{message}");
    }

    fn on_start(&mut self, campaign: &str, done: usize, total: usize) {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} trials, ETA {eta} | {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(campaign.to_string());
        bar.set_position(done as u64);
        bar.reset_eta();
        bar.set_message("best hypervolume -");
        bar.enable_steady_tick(Duration::from_millis(500));
        self.bar = Some(bar);
    }

    fn on_trial(&mut self, trial: &TrialRecord, progress: &Progress) {
        if let Some(bar) = &self.bar {
            bar.set_position(progress.done as u64);
            let best = progress
                .best_accuracy
                .map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
            bar.set_message(format!(
                "best hypervolume {:.4}, best accuracy {best}, failed {}",
                progress.hypervolume, progress.failed
            ));
            if let Some(error) = &trial.error {
                bar.println(format!("trial {} failed: {error}", trial.trial_id));
            }
        }
    }

    fn on_finish(&mut self, _progress: &Progress) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}
