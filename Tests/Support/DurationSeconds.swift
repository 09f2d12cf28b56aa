extension Duration {
    /// The duration as a `Double` of seconds, for deadlines and for comparing with the seconds
    /// the server logs.
    public var inSeconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
