//! What a processing service supplies: a function from one input record to an outcome.
//! It does no I/O and reads no clock (time comes from [`Context`]), so it is unit-testable
//! without Kafka.

/// One consumed record.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// True when the record was re-produced by the dead-letter service (header `sluice-replay`).
    pub replay: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Context {
    pub now_micros: i64,
}

/// One record to produce, inside the same transaction as the input's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Emit(Vec<Output>),
    /// Nothing to produce (for example a resend already seen); the reason is a bounded code.
    Skip(&'static str),
    /// The record cannot be processed: it goes to the stage's dead-letter topic with this
    /// bounded code. `detail` must be free of patient data.
    Reject {
        code: &'static str,
        detail: String,
    },
    /// Something outside the record failed (for example an unknown schema id whose fetch
    /// failed): retried with backoff, never dead-lettered.
    Retry {
        code: &'static str,
    },
}

pub trait Processor: Send {
    fn process(&mut self, input: &Input<'_>, ctx: &Context) -> Outcome;

    /// The open transaction committed: state changed since the last commit is now durable.
    fn committed(&mut self) {}

    /// The open transaction aborted: forget state changed since the last commit.
    fn aborted(&mut self) {}

    /// The group gave this instance partitions again after a rebalance, and no transaction is
    /// open. State that another instance may have added while it owned those partitions (read
    /// back from a state topic at start-up) must be read again here, before the first record
    /// of the new assignment. An error leaves the records unprocessed; the stage retries.
    fn reassigned(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
