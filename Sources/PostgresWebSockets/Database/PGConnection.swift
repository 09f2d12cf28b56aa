import CLibPQ

#if canImport(Glibc)
    import Glibc
#endif

/// One libpq connection. Not thread-safe: each is owned by one database thread.
final class PGConnection {
    private let raw: OpaquePointer

    private init(raw: OpaquePointer) {
        self.raw = raw
    }

    deinit {
        PQfinish(raw)
    }

    /// Connects (blocking, on the calling database thread). The user's connection string
    /// comes last so that any of these defaults it sets itself wins.
    static func connect(_ conninfo: String, applicationName: String) -> Result<PGConnection, DatabaseError> {
        let parameters: [(String, String)] = [
            ("application_name", applicationName),
            ("client_encoding", "UTF8"),
            ("connect_timeout", "5"),
            ("keepalives", "1"),
            ("keepalives_idle", "5"),
            ("keepalives_interval", "2"),
            ("keepalives_count", "3"),
            ("dbname", conninfo),
        ]
        let keywords = parameters.map { strdup($0.0) } + [nil]
        let values = parameters.map { strdup($0.1) } + [nil]
        defer {
            keywords.forEach { free($0) }
            values.forEach { free($0) }
        }
        let conn = keywords.map { UnsafePointer($0) }.withUnsafeBufferPointer { k in
            values.map { UnsafePointer($0) }.withUnsafeBufferPointer { v in
                PQconnectdbParams(k.baseAddress, v.baseAddress, 1)
            }
        }
        guard let conn else { return .failure(.connection("out of memory")) }
        let connection = PGConnection(raw: conn)
        guard PQstatus(conn) == CONNECTION_OK else {
            return .failure(.connection(connection.errorMessage))
        }
        return .success(connection)
    }

    var errorMessage: String {
        Self.oneLine(String(cString: PQerrorMessage(raw)))
    }

    var isBad: Bool { PQstatus(raw) != CONNECTION_OK }

    var socket: Int32 { PQsocket(raw) }

    var backendPID: Int32 { PQbackendPID(raw) }

    func setNonBlocking() -> Bool {
        PQsetnonblocking(raw, 1) == 0
    }

    /// Makes closing reset the connection (RST) instead of ending it in order: what the
    /// kernel has not delivered yet is dropped. A command given up on over a silent network
    /// path then cannot reach PostgreSQL later, when the path heals, and be committed again
    /// after it was retried elsewhere.
    func resetOnClose() {
        let fd = PQsocket(raw)
        guard fd >= 0 else { return }
        var hard = linger(l_onoff: 1, l_linger: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, socklen_t(MemoryLayout<linger>.size))
    }

    /// Quotes a name for use as an SQL identifier. Channel names may hold any character.
    func quoteIdentifier(_ name: String) -> String? {
        guard let quoted = PQescapeIdentifier(raw, name, name.utf8.count) else { return nil }
        defer { PQfreemem(quoted) }
        return String(cString: quoted)
    }

    func sendQuery(_ sql: String) -> Bool {
        PQsendQuery(raw, sql) == 1
    }

    /// Sends a statement with text parameters.
    func sendQuery(_ sql: String, textParameters: [String]) -> Bool {
        let cStrings = textParameters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let values = cStrings.map { UnsafePointer($0) }
        return PQsendQueryParams(raw, sql, Int32(textParameters.count), nil, values, nil, nil, 0) == 1
    }

    /// Sends a statement whose parameters are given in binary format.
    func sendQuery(_ sql: String, binaryParameters: [[UInt8]], types: [Oid]) -> Bool {
        let lengths = binaryParameters.map { Int32($0.count) }
        let formats = [Int32](repeating: 1, count: binaryParameters.count)
        return withBytePointers(binaryParameters) { pointers in
            PQsendQueryParams(
                raw, sql, Int32(binaryParameters.count), types, pointers, lengths, formats, 0
            ) == 1
        }
    }

    /// Runs `sql` and waits for it (blocking, whatever the connection's mode): for start-up
    /// work such as installing the schema. Parameters are text. The rows of the last result.
    func execute(_ sql: String, _ parameters: [String] = []) -> Result<[[String?]], DatabaseError> {
        let cStrings = parameters.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let values = cStrings.map { UnsafePointer($0) }
        let result =
            parameters.isEmpty
            ? PQexec(raw, sql) : PQexecParams(raw, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        guard let result else { return .failure(.connection(errorMessage)) }
        let wrapped = PGResult(result)
        guard wrapped.isSuccess else {
            let state = wrapped.sqlState
            let transient = isBad || state.map(DatabaseError.isTransient) ?? true
            return .failure(
                DatabaseError(kind: transient ? .connection : .content, message: wrapped.errorMessage, sqlState: state))
        }
        return .success(
            (0..<wrapped.rowCount).map { row in
                (0..<Int(PQnfields(result))).map { wrapped.value(row: row, column: $0) }
            })
    }

    /// Pushes buffered output to the server: 0 when done, 1 when more remains, -1 on failure.
    func flush() -> Int32 {
        PQflush(raw)
    }

    func consumeInput() -> Bool {
        PQconsumeInput(raw) == 1
    }

    var isBusy: Bool { PQisBusy(raw) == 1 }

    /// The next result of the current command, or nil when the command is complete.
    func nextResult() -> PGResult? {
        PQgetResult(raw).map(PGResult.init)
    }

    /// Calls `body` with each notification received so far (channel, payload).
    func drainNotifications(_ body: (UnsafePointer<CChar>, UnsafePointer<CChar>) -> Void) {
        while let notify = PQnotifies(raw) {
            body(notify.pointee.relname, notify.pointee.extra)
            PQfreemem(notify)
        }
    }

    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline).map { $0.trimming() }.filter { !$0.isEmpty }.joined(
            separator: " ")
    }
}

/// A result, cleared when the last reference goes.
final class PGResult {
    private let raw: OpaquePointer

    init(_ raw: OpaquePointer) {
        self.raw = raw
    }

    deinit {
        PQclear(raw)
    }

    var status: ExecStatusType { PQresultStatus(raw) }

    var isSuccess: Bool {
        status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_EMPTY_QUERY
    }

    var sqlState: String? {
        PQresultErrorField(raw, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
    }

    var errorMessage: String {
        let primary = PQresultErrorField(raw, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
        return PGConnection.oneLine(primary ?? String(cString: PQresultErrorMessage(raw)))
    }

    var rowCount: Int { Int(PQntuples(raw)) }

    var columnCount: Int { Int(PQnfields(raw)) }

    func value(row: Int, column: Int) -> String? {
        guard PQgetisnull(raw, Int32(row), Int32(column)) == 0 else { return nil }
        return String(cString: PQgetvalue(raw, Int32(row), Int32(column)))
    }
}

private func withBytePointers<R>(_ arrays: [[UInt8]], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    // Parameters are few (two arrays per batch); recursion keeps every buffer pinned.
    func pin(_ index: Int, _ pointers: inout [UnsafePointer<CChar>?]) -> R {
        if index == arrays.count { return body(pointers) }
        return arrays[index].withUnsafeBufferPointer { buffer in
            pointers.append(UnsafeRawPointer(buffer.baseAddress).map { $0.assumingMemoryBound(to: CChar.self) })
            return pin(index + 1, &pointers)
        }
    }
    var pointers: [UnsafePointer<CChar>?] = []
    return pin(0, &pointers)
}
