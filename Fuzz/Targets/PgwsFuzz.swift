import CFuzzerDriver

#if canImport(Glibc)
    import Glibc
#endif

/// The fuzz targets in one executable: `pgws-fuzz TARGET [libFuzzer flags] [corpus folders]`.
///
/// Built by `make fuzz` with `-sanitize=fuzzer,address -DFUZZING`, it hands the command line
/// to libFuzzer. A plain build (no `FUZZING`) runs the target once over each file it is given,
/// which replays a corpus or a crash without libFuzzer.
@main
enum PgwsFuzz {
    static let targets: [FuzzTarget] = [
        RequestHeadTarget.target, JSONTarget.target, Base64Target.target, PercentTarget.target,
        JWTTarget.target, ConfigurationTarget.target, V1FrameTarget.target, SessionTarget.target,
    ]

    static func main() {
        var arguments = CommandLine.arguments
        let program = arguments.removeFirst()
        // Children libFuzzer starts (-fork, -jobs) get the same arguments less the target's
        // name: they find it in the environment.
        let name: String
        if let first = arguments.first, !first.hasPrefix("-"), targets.contains(where: { $0.name == first }) {
            name = arguments.removeFirst()
        } else if let fromEnvironment = getenv("PGWS_FUZZ_TARGET").map({ String(cString: $0) }) {
            name = fromEnvironment
        } else {
            usage()
        }
        guard let target = targets.first(where: { $0.name == name }) else { usage() }
        FuzzTarget.current = target
        setenv("PGWS_FUZZ_TARGET", name, 1)
        #if FUZZING
            var argc = Int32(arguments.count + 1)
            var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = .allocate(capacity: arguments.count + 2)
            for (index, argument) in ([program] + arguments).enumerated() { argv![index] = strdup(argument) }
            argv![arguments.count + 1] = nil
            exit(
                LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzerTestOneInput(data, size) })
        #else
            _ = program
            for path in arguments where !path.hasPrefix("-") {
                for file in FuzzTarget.files(at: path) {
                    guard let bytes = FuzzTarget.read(file) else {
                        writeError("cannot read \(file)\n")
                        exit(1)
                    }
                    bytes.withUnsafeBytes { target.run($0) }
                }
            }
        #endif
    }

    static func usage() -> Never {
        writeError("usage: pgws-fuzz TARGET [libFuzzer flags] [corpus folders or files]\ntargets:\n")
        for target in targets { writeError("  \(target.name): \(target.summary)\n") }
        #if !FUZZING
            writeError("this build replays files; `make fuzz` builds it for fuzzing\n")
        #endif
        exit(2)
    }
}

#if FUZZING
    /// The input callback under the name libFuzzer's object files expect: `-sanitize=fuzzer`
    /// links libFuzzer's own `main` in too, which refers to it (SwiftPM points `main` at ours).
    @_cdecl("LLVMFuzzerTestOneInput")
    public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        FuzzTarget.current?.run(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
#endif
