//! The test phase's guest side, as text: the one-shot systemd unit and the
//! script injected into the throwaway overlay of a captured disk, and the
//! report they print on the second serial port (`ttyS1`), parsed back on
//! the host. Pure, so the protocol is tested without a VM.
//!
//! Protocol: every line the host reads is `@@<nonce> <word> ...`, where
//! the nonce is random per boot, so a command's own output cannot end a
//! test or report a result by accident. A command's output is the text
//! between its `begin` and `end` lines.

use std::fmt::Write as _;

/// Where the injected files live inside the overlay (never in the image).
pub(crate) const GUEST_DIR: &str = "/.bakehouse-test";
/// The unit's name.
pub(crate) const UNIT: &str = "bakehouse-test.service";
/// The serial port the report is written to (`ttyS0` is the console).
const REPORT_TTY: &str = "/dev/ttyS1";

/// The one-shot unit: runs after the system reached `multi-user.target`.
pub(crate) fn unit() -> String {
    format!(
        "[Unit]
Description=bakehouse test phase (in the throwaway test overlay only)
After=multi-user.target

[Service]
Type=oneshot
StandardInput=null
TimeoutStartSec=infinity
ExecStart=/bin/sh {GUEST_DIR}/run
"
    )
}

/// The file holding test command `index` (run with `sh`, `set -e` first,
/// as on EC2).
pub(crate) fn command_file(index: usize) -> String {
    format!("t{index}")
}

/// The script the unit runs: each command in order, its output and exit
/// status on the report port, then power off.
pub(crate) fn run_script(count: usize, nonce: &str) -> String {
    let mut s = format!(
        "# bakehouse test phase: only in the throwaway overlay of the test boot.
exec </dev/null >{REPORT_TTY} 2>&1
stty -onlcr 2>/dev/null
cd /
echo '@@{nonce} start'
"
    );
    for i in 0..count {
        let _ = writeln!(
            s,
            "echo '@@{nonce} begin {i}'\n/bin/sh {GUEST_DIR}/{} \nrc=$?\nprintf '\\n@@{nonce} end {i} %s\\n' \"$rc\"",
            command_file(i)
        );
    }
    let _ = writeln!(
        s,
        "echo '@@{nonce} done'\nsystemctl --no-block poweroff || poweroff -f"
    );
    s
}

/// One test command's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TestOutcome {
    /// Index in the recipe's `test` list.
    pub index: usize,
    /// Exit status (`None`: it never finished).
    pub status: Option<i32>,
    /// What it printed (stdout and stderr), `\r` removed.
    pub output: String,
}

/// What the report port showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// The unit started (the system booted far enough).
    pub started: bool,
    /// Every command that began, in order.
    pub outcomes: Vec<TestOutcome>,
    /// Every command ran.
    pub done: bool,
}

/// Parses the report port's text.
pub(crate) fn parse(text: &str, nonce: &str) -> Report {
    let marker = format!("@@{nonce} ");
    let mut report = Report::default();
    let mut current: Option<TestOutcome> = None;
    for raw in text.split('\n') {
        let line = raw.trim_end_matches('\r');
        let Some(rest) = line.strip_prefix(&marker) else {
            if let Some(t) = current.as_mut() {
                t.output.push_str(line);
                t.output.push('\n');
            }
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["start"] => report.started = true,
            ["begin", i] => {
                if let Some(open) = current.take() {
                    report.outcomes.push(open);
                }
                current = i.parse().ok().map(|index| TestOutcome {
                    index,
                    status: None,
                    output: String::new(),
                });
            }
            ["end", i, rc] => {
                if let Some(mut t) = current.take() {
                    if i.parse() == Ok(t.index) {
                        t.status = rc.parse().ok();
                    }
                    // The newline printed before the marker.
                    if t.output.ends_with("\n\n") || t.output == "\n" {
                        t.output.pop();
                    }
                    report.outcomes.push(t);
                }
            }
            ["done"] => report.done = true,
            _ => {}
        }
    }
    if let Some(open) = current {
        report.outcomes.push(open);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_each_file_and_reports_with_the_nonce() {
        let s = run_script(2, "abc");
        assert!(s.contains("/bin/sh /.bakehouse-test/t0 "));
        assert!(s.contains("/bin/sh /.bakehouse-test/t1 "));
        assert!(s.contains("exec </dev/null >/dev/ttyS1 2>&1"));
        assert!(s.contains("@@abc end 1 %s"));
        assert!(s.trim_end().ends_with("poweroff -f"));
        assert!(unit().contains("ExecStart=/bin/sh /.bakehouse-test/run"));
    }

    #[test]
    fn reports_give_each_commands_status_and_output() {
        let text = "noise\r\n@@n1 start\r\n@@n1 begin 0\r\nhello\r\n\r\n@@n1 end 0 0\r\n\
                    @@n1 begin 1\r\npartial line\n@@n1 end 1 3\n@@n1 done\n";
        let r = parse(text, "n1");
        assert!(r.started && r.done);
        assert_eq!(
            r.outcomes,
            vec![
                TestOutcome {
                    index: 0,
                    status: Some(0),
                    output: "hello\n".into()
                },
                TestOutcome {
                    index: 1,
                    status: Some(3),
                    output: "partial line\n".into()
                },
            ]
        );
    }

    #[test]
    fn forged_or_missing_markers_do_not_pass_a_test() {
        // Another nonce (or a command printing markers of its own) counts
        // as output; a command that never ended has no status.
        let text = "@@n1 start\n@@n1 begin 0\n@@zz end 0 0\n@@zz done\n";
        let r = parse(text, "n1");
        assert!(r.started && !r.done);
        assert_eq!(r.outcomes.len(), 1);
        assert_eq!(r.outcomes[0].status, None);
        assert!(r.outcomes[0].output.contains("@@zz end 0 0"));
        assert_eq!(parse("", "n1"), Report::default());
    }
}
