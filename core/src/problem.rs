//! Why something cannot be done, and what to do about it: the value every
//! check returns. At the SQL boundary it becomes an ERROR with a HINT
//! (`errors::raise`); inside a run it becomes a failed outcome in the run
//! log, with the hint (`executor::report_problems`).

/// A refusal: what is wrong, naming the object, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub hint: String,
}

impl Problem {
    pub fn new(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Problem { message: message.into(), hint: hint.into() }
    }
}
