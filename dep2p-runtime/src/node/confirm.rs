//! Waiting for the listener's confirmation of a handshake.
//!
//! In TLS 1.3 a dialer's handshake completes when it has sent its certificate and Finished,
//! before the listener has checked them. The listener accepts the dialer only then, and says
//! so with QUIC's HANDSHAKE_DONE frame; a listener that refuses it closes the connection
//! instead. Waiting for one or the other lets a dialer learn of a refusal before it uses the
//! connection.

use std::time::Duration;

/// The first and the longest pause between two looks at the connection.
const FIRST_LOOK: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(25);

/// Completes once the listener has confirmed the handshake, or with the error the connection
/// closed with.
///
/// The QUIC stack exposes HANDSHAKE_DONE only in its frame counts, so they are looked at after
/// 1 ms, then at doubling intervals up to 25 ms; a close is seen at once. The frame arrives
/// about one round trip after the dialer's handshake completed.
pub(crate) async fn confirmed(quic: &quinn::Connection) -> Result<(), quinn::ConnectionError> {
    let mut pause = FIRST_LOOK;
    loop {
        if let Some(err) = quic.close_reason() {
            return Err(err);
        }
        if quic.stats().frame_rx.handshake_done > 0 {
            return Ok(());
        }
        tokio::select! {
            err = quic.closed() => return Err(err),
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
