import Foundation
import NIOConcurrencyHelpers

/// An unbounded FIFO that one consumer awaits with a timeout: how tests wait for events
/// (frames, notifications, log lines) instead of sleeping.
public final class EventQueue<Element: Sendable>: Sendable {
    private struct State {
        var items: [Element] = []
        var waiter: (id: Int, continuation: CheckedContinuation<Element?, Never>)? = nil
        var nextWaiterID = 0
    }

    private let state = NIOLockedValueBox(State())

    public init() {}

    public func push(_ item: Element) {
        let waiter = state.withLockedValue { state -> CheckedContinuation<Element?, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.items.append(item)
            return nil
        }
        waiter?.resume(returning: item)
    }

    public struct Timeout: Error, CustomStringConvertible {
        public let seconds: Double
        public var description: String { "nothing arrived within \(seconds) s" }
    }

    public func next(timeout: Double) async throws -> Element {
        let timeout = patience(timeout)
        guard let item = await nextIfAny(within: timeout) else { throw Timeout(seconds: timeout) }
        return item
    }

    /// The next element, or nil when none arrives within `seconds`.
    public func nextIfAny(within seconds: Double) async -> Element? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
            let id = state.withLockedValue { state -> Int? in
                if !state.items.isEmpty {
                    continuation.resume(returning: state.items.removeFirst())
                    return nil
                }
                precondition(state.waiter == nil, "EventQueue has one consumer")
                state.nextWaiterID += 1
                state.waiter = (state.nextWaiterID, continuation)
                return state.nextWaiterID
            }
            guard let id else { return }
            Task {
                try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000)))
                let expired = self.state.withLockedValue { state -> CheckedContinuation<Element?, Never>? in
                    guard let waiter = state.waiter, waiter.id == id else { return nil }
                    state.waiter = nil
                    return waiter.continuation
                }
                expired?.resume(returning: nil)
            }
        }
    }

    /// Elements queued and not yet taken.
    public var count: Int { state.withLockedValue { $0.items.count } }
}
