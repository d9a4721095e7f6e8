//! The report of `train doctor`: its lines, each a status word, a topic and a text.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How a line of the report ends up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Works.
    Ok,
    /// Worth knowing or fixing, but the GPU path does not depend on it.
    Note,
    /// Not checked: something it needs failed above.
    Skip,
    /// Breaks the GPU path; the line says what to do.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "ok",
            Status::Note => "note",
            Status::Skip => "skip",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the report: `ok    driver: ...`.
pub(super) struct Line {
    pub(super) status: Status,
    pub(super) topic: String,
    pub(super) text: String,
}

#[derive(Default)]
pub(super) struct Report {
    pub(super) lines: Vec<Line>,
}

impl Report {
    pub(super) fn add(
        &mut self,
        status: Status,
        topic: impl Into<String>,
        text: impl Into<String>,
    ) {
        let line = Line {
            status,
            topic: topic.into(),
            text: shorten_names(&text.into()),
        };
        println!("{:<5} {}: {}", line.status, line.topic, line.text);
        self.lines.push(line);
    }

    pub(super) fn first_failure(&self) -> Option<&Line> {
        self.lines.iter().find(|l| l.status == Status::Fail)
    }
}

/// The probe's list of every library name it tried (`none of ["libcuda.so", ... 34 names]`)
/// shortened to its first and last and how many: the line stays readable.
fn shorten_names(text: &str) -> String {
    let Some(start) = text.find("none of [") else {
        return text.to_string();
    };
    let list_start = start + "none of [".len();
    let Some(len) = text[list_start..].find(']') else {
        return text.to_string();
    };
    let names: Vec<&str> = text[list_start..list_start + len].split(", ").collect();
    let shown = match names.as_slice() {
        [first, .., last] if names.len() > 2 => {
            format!("the {} names {first} ... {last}", names.len())
        }
        _ => names.join(", "),
    };
    format!(
        "{}none of {shown}{}",
        &text[..start],
        &text[list_start + len + 1..]
    )
}

/// Runs `f`, a panic inside it becoming `Err` naming `what` and the panic's message.
pub(super) fn caught<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else if let Some(f) = payload.downcast_ref::<tensor::GpuFailure>() {
            f.to_string()
        } else if let Some(o) = payload.downcast_ref::<tensor::OutOfMemory>() {
            o.to_string()
        } else {
            "a panic without a message".to_string()
        };
        format!("{what} failed: {message}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_name_lists_are_shortened() {
        assert_eq!(
            shorten_names(r#"x: none of ["a.so", "b.so", "c.so"] could be loaded (first: d)"#),
            r#"x: none of the 3 names "a.so" ... "c.so" could be loaded (first: d)"#
        );
        assert_eq!(
            shorten_names("none of [\"a.so\"] here"),
            "none of \"a.so\" here"
        );
        assert_eq!(shorten_names("no list [x"), "no list [x");
        assert_eq!(shorten_names("none of [unclosed"), "none of [unclosed");
    }

    #[test]
    fn a_panic_is_a_message() {
        let r: Result<(), String> = caught("the thing", || panic!("boom {}", 7));
        assert_eq!(r.unwrap_err(), "the thing failed: boom 7");
        assert_eq!(caught("x", || 3), Ok(3));
    }
}
