//! Reading a command's output line by line with bounded memory: a line
//! longer than [`MAX_LINE_BYTES`] keeps its first bytes and says how many
//! were cut, whatever the command prints (a 200 MB line without a newline
//! costs [`MAX_LINE_BYTES`], not 200 MB).

use std::collections::VecDeque;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};

/// Follows a child's stdout and stderr as they come, line by line (each
/// cut to [`MAX_LINE_BYTES`], the `sensitive` values masked), handing each
/// line and the bytes it had to `each`, until both streams end. Returns the
/// last `keep` lines, for a failure's message.
pub(crate) async fn follow_output<O, E>(
    stdout: Option<O>,
    stderr: Option<E>,
    sensitive: &[String],
    keep: usize,
    mut each: impl FnMut(&str, u64),
) -> Vec<String>
where
    O: AsyncRead + Unpin,
    E: AsyncRead + Unpin,
{
    let mut out = stdout.map(|s| BoundedLines::new(BufReader::new(s)));
    let mut err = stderr.map(|s| BoundedLines::new(BufReader::new(s)));
    let mut tail = VecDeque::with_capacity(keep);
    loop {
        let (line, bytes) = tokio::select! {
            line = next(&mut out), if out.is_some() => match line {
                Some(l) => l,
                None => { out = None; continue }
            },
            line = next(&mut err), if err.is_some() => match line {
                Some(l) => l,
                None => { err = None; continue }
            },
            else => break,
        };
        let line = if sensitive.is_empty() {
            line
        } else {
            crate::recipe::mask::text(&line, sensitive)
        };
        each(&line, bytes);
        if tail.len() == keep {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    tail.into()
}

/// The next line of a stream (`None` at its end).
async fn next<R: AsyncBufRead + Unpin>(
    lines: &mut Option<BoundedLines<R>>,
) -> Option<(String, u64)> {
    lines.as_mut()?.next_line().await
}

/// Longest line kept, in bytes.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Most output of one command written to the log, in bytes; past it the
/// output is still read (and its last lines kept for the record) but not
/// logged.
pub const MAX_LOGGED_BYTES: u64 = 64 << 20;

/// Lines of a stream, each cut to [`MAX_LINE_BYTES`].
pub(crate) struct BoundedLines<R> {
    reader: R,
    line: Vec<u8>,
    cut: u64,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    /// Lines of `reader`.
    pub fn new(reader: R) -> BoundedLines<R> {
        BoundedLines {
            reader,
            line: Vec::new(),
            cut: 0,
        }
    }

    /// The next line (without its newline), `None` at the end of the
    /// stream or on a read error, and the bytes it had in all.
    pub async fn next_line(&mut self) -> Option<(String, u64)> {
        loop {
            let chunk = match self.reader.fill_buf().await {
                Ok(c) => c,
                Err(_) => return self.take_if_any(),
            };
            if chunk.is_empty() {
                return self.take_if_any();
            }
            let (end, newline) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i, true),
                None => (chunk.len(), false),
            };
            let room = MAX_LINE_BYTES.saturating_sub(self.line.len());
            let kept = end.min(room);
            self.line.extend_from_slice(&chunk[..kept]);
            self.cut += (end - kept) as u64;
            self.reader.consume(end + usize::from(newline));
            if newline {
                return Some(self.take());
            }
        }
    }

    fn take_if_any(&mut self) -> Option<(String, u64)> {
        (!self.line.is_empty() || self.cut > 0).then(|| self.take())
    }

    fn take(&mut self) -> (String, u64) {
        let total = self.line.len() as u64 + self.cut;
        let mut text = String::from_utf8_lossy(&self.line)
            .trim_end_matches('\r')
            .to_string();
        if self.cut > 0 {
            text.push_str(&format!(" … [{} bytes cut]", self.cut));
        }
        self.line.clear();
        self.cut = 0;
        (text, total + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8]) -> Vec<String> {
        let mut reader = BoundedLines::new(tokio::io::BufReader::with_capacity(1000, input));
        let mut out = Vec::new();
        while let Some((line, _)) = reader.next_line().await {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn both_streams_are_followed_masked_and_the_tail_kept() {
        let mut seen = Vec::new();
        let tail = follow_output(
            Some(&b"one\ntwo s3cret\nthree\n"[..]),
            Some(&b"err\n"[..]),
            &["s3cret".to_string()],
            2,
            |line, _| seen.push(line.to_string()),
        )
        .await;
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(&"two <sensitive>".to_string()), "{seen:?}");
        assert!(!seen.iter().any(|l| l.contains("s3cret")));
        assert_eq!(tail, seen[2..]);
    }

    #[tokio::test]
    async fn short_lines_pass_unchanged() {
        assert_eq!(lines(b"a\r\nb\n\nc").await, ["a", "b", "", "c"]);
        assert!(lines(b"").await.is_empty());
    }

    #[tokio::test]
    async fn a_huge_line_is_cut_and_the_next_one_survives() {
        let mut input = vec![b'x'; 3 * MAX_LINE_BYTES + 5];
        input.extend(b"\nnext\n");
        let out = lines(&input).await;
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with(&"x".repeat(MAX_LINE_BYTES)));
        assert!(
            out[0].ends_with(&format!(" … [{} bytes cut]", 2 * MAX_LINE_BYTES + 5)),
            "{}",
            &out[0][MAX_LINE_BYTES..]
        );
        assert_eq!(out[1], "next");
    }
}
