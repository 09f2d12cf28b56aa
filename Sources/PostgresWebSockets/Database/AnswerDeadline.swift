/// How long the listener waits for PostgreSQL to answer before it counts the connection as
/// lost: the configured probe timeout while answers come fast, longer while they have been
/// slow lately, estimated the way TCP sets its retransmission timeout (RFC 6298: smoothed
/// round trip plus four times its mean deviation), and never more than `ceiling`.
///
/// A backend that LISTENs reads every notification committed on the server, whatever its
/// channel, before it answers anything else; during another application's burst of NOTIFYs
/// an empty query can take longer than the timeout. Counting that as an outage would drop
/// the connection and lose the notifications committed until it is back, which is the very
/// loss the probe exists to limit. A silent network path is still noticed within the timeout
/// on a database that answered fast before it.
struct AnswerDeadline {
    let floor: Double
    let ceiling: Double
    private var smoothed: Double? = nil
    private var deviation = 0.0

    init(floor: Double, ceiling: Double = 10) {
        self.floor = floor
        self.ceiling = max(floor, ceiling)
    }

    /// Seconds to wait for the answer to the command on the wire.
    var timeout: Double {
        guard let smoothed else { return floor }
        return min(ceiling, max(floor, smoothed + 4 * deviation))
    }

    /// A command was answered `seconds` after it was sent.
    mutating func answered(after seconds: Double) {
        let sample = max(0, seconds)
        guard let previous = smoothed else {
            smoothed = sample
            deviation = sample / 2
            return
        }
        deviation = 0.75 * deviation + 0.25 * abs(previous - sample)
        smoothed = 0.875 * previous + 0.125 * sample
    }
}
