import NIOConcurrencyHelpers

/// Closes the open sockets whose claims contain a filter (the hub, on every event loop).
protocol SocketRevoker: Sendable {
    func disconnect(matching filter: JSONValue, reason: CloseReason)
}

/// The revocations in force (`pgws.revoke`), which every handshake consults. The listener
/// thread is the only writer: it loads them from `pgws.revocations` on every connection and
/// adds what `pgws:revoke` announces; it also passes `pgws.disconnect` on to the sockets.
///
/// A filter of exactly one string-valued `sub` or `jti` is looked up in a hash table, so a
/// handshake costs the same with one such revocation as with a million; any other filter is
/// checked against every token's claims (`claims @> filter`), one after the other.
final class Revocations: Sendable {
    struct Revocation: Sendable, Equatable {
        let filter: JSONValue
        /// Unix seconds; the revocation ends then.
        let until: Double
    }

    private struct Index {
        var bySub: [String: Double] = [:]
        var byJTI: [String: Double] = [:]
        var other: [Revocation] = []

        mutating func add(_ revocation: Revocation) {
            if case .object(let members) = revocation.filter, members.count == 1,
                case .string(let value) = members[0].value
            {
                switch members[0].key {
                case "sub":
                    bySub[value] = max(bySub[value] ?? 0, revocation.until)
                    return
                case "jti":
                    byJTI[value] = max(byJTI[value] ?? 0, revocation.until)
                    return
                default:
                    break
                }
            }
            other.append(revocation)
        }

        mutating func prune(now: Double) {
            bySub = bySub.filter { $0.value > now }
            byJTI = byJTI.filter { $0.value > now }
            other.removeAll { $0.until <= now }
        }

        var count: Int { bySub.count + byJTI.count + other.count }
    }

    private let index = NIOLockedValueBox(Index())
    private let revoker: (any SocketRevoker)?

    init(revoker: (any SocketRevoker)? = nil) {
        self.revoker = revoker
    }

    /// What a fresh connection read from `pgws.revocations`: everything else is gone (it may
    /// have expired, or been deleted by hand, while the connection was down).
    func replaceAll(with revocations: [Revocation], now: Double) {
        var fresh = Index()
        for revocation in revocations where revocation.until > now { fresh.add(revocation) }
        index.withLockedValue { $0 = fresh }
    }

    /// `pgws.revoke`: refuses handshakes that match until `until`, and closes the open sockets
    /// that match.
    func revoke(_ revocation: Revocation, reason: CloseReason, now: Double) {
        index.withLockedValue {
            $0.prune(now: now)
            if revocation.until > now { $0.add(revocation) }
        }
        revoker?.disconnect(matching: revocation.filter, reason: reason)
    }

    /// `pgws.disconnect`: closes the open sockets that match, and that is all.
    func disconnect(matching filter: JSONValue, reason: CloseReason) {
        revoker?.disconnect(matching: filter, reason: reason)
    }

    func isRevoked(_ claims: JSONValue, now: Double) -> Bool {
        index.withLockedValue { index in
            if !index.bySub.isEmpty, let sub = claims["sub"]?.stringValue, let until = index.bySub[sub], until > now {
                return true
            }
            if !index.byJTI.isEmpty, let jti = claims["jti"]?.stringValue, let until = index.byJTI[jti], until > now {
                return true
            }
            return index.other.contains { $0.until > now && claims.contains($0.filter) }
        }
    }

    /// Revocations held (expired ones included until the next change prunes them).
    var count: Int { index.withLockedValue { $0.count } }
}
