/// Where a notification on the listen channel goes, as postgres-websockets 0.10+ routes it:
/// a payload that is a JSON object with a string `channel` goes, as the whole raw text, to
/// that channel's readers; any other payload goes to the readers of a channel named like the
/// listen channel itself.
struct ListenChannelRouting: Sendable {
    let listenChannel: ChannelKey
    private let listenBytes: [UInt8]

    init(listenChannel: String) {
        self.listenChannel = ChannelKey(listenChannel)
        self.listenBytes = Array(listenChannel.utf8)
    }

    /// The channel whose readers get a notification that PostgreSQL delivered on `channel`.
    func route(channel: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer) -> ChannelKey {
        guard channel.elementsEqual(listenBytes) else {
            return ChannelKey(String(decoding: channel, as: UTF8.self))
        }
        // The strict parser: whitespace around the object is fine, trailing garbage is not.
        guard case .object(let members)? = try? JSONParser.parse(Array(payload)),
            let target = members.first(where: { $0.key == "channel" })?.value.stringValue
        else {
            return listenChannel
        }
        return ChannelKey(target)
    }
}
