//! The build's step display on a terminal, and the logging set-up that keeps
//! log lines out of its way.
//!
//! The display is a `tracing` span drawn by `tracing-indicatif`: one bar for
//! the build (steps done of steps, elapsed time, the current step and
//! provisioner with its last output line) and a line per finished step
//! above it. Log lines go through the same `MultiProgress`, which hides the
//! bar while a line is written, so no stale frame is left in the scrollback.
//! Without a terminal (or with `-q`, `--color never`, `NO_COLOR`,
//! `--log-format json`) the layer is not installed and nothing is drawn.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing::{Event, Span, Subscriber};
use tracing_indicatif::span_ext::IndicatifSpanExt;
use tracing_indicatif::style::ProgressStyle;
use tracing_indicatif::{indicatif_eprintln, IndicatifLayer};
use tracing_subscriber::filter::{filter_fn, EnvFilter};

use super::log_mask::Masking;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use super::{Cli, LogFormat};

/// The target of the build's progress span (the only span drawn).
const PROGRESS_TARGET: &str = "bakehouse::progress";

/// The span of the build being shown and its current step, for
/// [`ProvisionerLines`] to update.
static SHOWN_BUILD: Mutex<Option<(Span, String)>> = Mutex::new(None);

/// Installs the global `tracing` subscriber for `cli`: log lines on stderr
/// (text or JSON lines) filtered by [`Cli::log_filter`], plus the progress
/// display when [`Cli::progress`] says it is shown.
pub fn init_logging(cli: &Cli) {
    let filter = EnvFilter::new(cli.log_filter());
    let registry = tracing_subscriber::registry();
    if cli.log_format == LogFormat::Json {
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_writer(Masking(std::io::stderr))
            .with_filter(filter);
        registry.with(logs).init();
    } else if cli.progress() {
        let bars: IndicatifLayer<_> = IndicatifLayer::new();
        let logs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(true)
            .with_writer(Masking(bars.get_stderr_writer()))
            .with_filter(filter);
        let bars = bars.with_filter(filter_fn(|m| m.target() == PROGRESS_TARGET));
        registry.with(logs).with(bars).with(ProvisionerLines).init();
    } else {
        let logs = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(cli.color.enabled())
            .with_writer(Masking(std::io::stderr))
            .with_filter(filter);
        registry.with(logs).init();
    }
}

/// The step display of one build: a line per finished step, a bar for the
/// rest. Hidden (every method a no-op but the step events) when not shown.
pub(crate) struct StepProgress {
    span: Mutex<Span>,
    shown: bool,
    current: Mutex<Option<(String, Instant)>>,
}

impl StepProgress {
    /// The display of a build of `steps` steps, drawn on stderr when `shown`.
    pub(crate) fn new(shown: bool, steps: usize) -> Arc<StepProgress> {
        let span = if shown {
            tracing::info_span!(target: PROGRESS_TARGET, "build")
        } else {
            Span::none()
        };
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos}/{len} {wide_msg}")
        {
            span.pb_set_style(&style);
        }
        span.pb_set_length(steps as u64);
        span.pb_start();
        if shown {
            *SHOWN_BUILD.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((span.clone(), String::new()));
        }
        Arc::new(StepProgress {
            span: Mutex::new(span),
            shown,
            current: Mutex::new(None),
        })
    }

    /// The build entered `step`: the previous step is finished.
    pub(crate) fn step(&self, step: &str) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((prev, started)) = current.take() {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(step = %prev, seconds, "step finished");
            self.line(&format!("  ✓ {prev:<10} {seconds:>7.1} s"));
            self.span().pb_inc(1);
        }
        tracing::info!(step = %step, "step started");
        self.span().pb_set_message(&format!("{step} …"));
        if let Some((_, shown)) = SHOWN_BUILD
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            *shown = step.to_string();
        }
        *current = Some((step.to_string(), Instant::now()));
    }

    /// A line above the bar (a retry, a finished step).
    pub(crate) fn line(&self, text: &str) {
        if self.shown {
            indicatif_eprintln!("{text}");
        }
    }

    /// The build ended: the last step is marked and the bar removed.
    pub(crate) fn finish(&self, ok: bool) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((prev, started)) = current.take() {
            let mark = if ok { "✓" } else { "✗" };
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(step = %prev, seconds, ok, "step finished");
            self.line(&format!("  {mark} {prev:<10} {seconds:>7.1} s"));
        }
        *SHOWN_BUILD.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Closing the span clears its bar.
        *self.span.lock().unwrap_or_else(|p| p.into_inner()) = Span::none();
    }

    fn span(&self) -> Span {
        self.span.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Puts the current provisioner and its last output line on the bar: the
/// local backend logs each output line as an event with a `provisioner`
/// field.
struct ProvisionerLines;

impl<S: Subscriber> Layer<S> for ProvisionerLines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut seen = OutputLine::default();
        event.record(&mut seen);
        let Some(provisioner) = seen.provisioner else {
            return;
        };
        let span = SHOWN_BUILD
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((span, step)) = span {
            let line: String = seen.message.chars().take(200).collect();
            span.pb_set_message(&format!("{step} … {provisioner}: {line}"));
        }
    }
}

/// The fields of an output line event.
#[derive(Default)]
struct OutputLine {
    provisioner: Option<String>,
    message: String,
}

impl Visit for OutputLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "provisioner" => {
                self.provisioner = Some(format!("{value:?}").trim_matches('"').to_string())
            }
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}
