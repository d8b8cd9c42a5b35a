//! Sources feeding the EventDecoder. Each is a supervised actor that sends
//! batches with `send().await` (bounded by the decoder's mailbox) and waits for
//! their outcome before sending more, so a slow store slows the source down
//! instead of filling memory.

pub mod replay;
pub mod simulate;

pub use replay::ReplaySource;
pub use simulate::SimulateSource;
