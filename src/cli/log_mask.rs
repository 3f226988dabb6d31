//! Sensitive values kept out of the CLI's own log lines: a `MakeWriter`
//! that collects each event's bytes and writes them with every value
//! [`mask_in_logs`] was given replaced by `<sensitive>`. A recipe's values
//! appear in debug events (state inputs carry the recipe), so masking the
//! provisioners' output alone is not enough.

use std::io::{self, Write};
use std::sync::RwLock;

use tracing_subscriber::fmt::MakeWriter;

use crate::recipe::mask;

/// The values masked in every log line from now on.
static MASKED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Masks `values` in every later log line of this process.
pub(crate) fn mask_in_logs(values: &[String]) {
    if values.is_empty() {
        return;
    }
    if let Ok(mut masked) = MASKED.write() {
        let all: Vec<String> = masked.drain(..).chain(values.iter().cloned()).collect();
        *masked = mask::values(all);
    }
}

/// Wraps a `MakeWriter` so each event is masked before it is written.
pub(crate) struct Masking<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masking<M> {
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter {
            inner: self.0.make_writer(),
            buf: Vec::new(),
        }
    }
}

/// One event's bytes, masked and written when dropped.
pub(crate) struct MaskingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for MaskingWriter<W> {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let out = match MASKED.read() {
            Ok(values) if !values.is_empty() => {
                mask::text(&String::from_utf8_lossy(&buf), &values).into_bytes()
            }
            _ => buf,
        };
        // A closed stderr must not fail or panic anything.
        let _ = self.inner.write_all(&out);
        let _ = self.inner.flush();
    }
}
