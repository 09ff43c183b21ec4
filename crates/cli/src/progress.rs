//! A progress bar over the bytes of one input, shown only on a terminal.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Counts bytes as the decoder pulls them; draws a bar when stderr is a terminal.
pub struct Progress<R> {
    inner: R,
    bytes: u64,
    bar: Option<ProgressBar>,
    /// Points decoded so far, counted by the visitor.
    points: Rc<Cell<u64>>,
    started: Instant,
    /// Only touch the bar every so many bytes: `inc` is cheap, but not free.
    pending: u64,
}

const TICK: u64 = 1 << 20;

impl<R: Read> Progress<R> {
    pub fn new(inner: R, name: &str, terminal: bool, points: Rc<Cell<u64>>) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} {bytes} read, {binary_bytes_per_sec}, {msg}, {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(name.to_string());
            bar
        });
        Progress {
            inner,
            bytes: 0,
            bar,
            points,
            started: Instant::now(),
            pending: 0,
        }
    }

    /// Clears the bar; returns the bytes read.
    pub fn finish(self) -> u64 {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        self.bytes
    }
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.pending += n as u64;
        if self.pending >= TICK {
            if let Some(bar) = &self.bar {
                bar.inc(self.pending);
                let points = self.points.get();
                let secs = self.started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!(
                    "{points} points ({:.0} points/s)",
                    points as f64 / secs
                ));
            }
            self.pending = 0;
        }
        Ok(n)
    }
}

/// For a mapped input, which the decoders read without calls to count: a spinner with the
/// input's size and the time so far, on a terminal only.
pub fn spinner(name: &str, terminal: bool, len: usize) -> Option<ProgressBar> {
    terminal.then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg}, {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_string());
        bar.set_message(format!("{} (mapped)", indicatif::HumanBytes(len as u64)));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    })
}
