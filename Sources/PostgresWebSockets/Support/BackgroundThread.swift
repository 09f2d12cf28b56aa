import CLinuxShims

#if canImport(Glibc)
    import Glibc
#endif

/// Starts a detached OS thread. The database threads block in libpq and poll(2), which
/// must never happen on an event loop or in Swift's cooperative thread pool.
func startBackgroundThread(name: String, _ body: @escaping @Sendable () -> Void) {
    final class Box: Sendable {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
    let box = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
    var thread = pthread_t()
    let result = pthread_create(
        &thread, nil,
        { argument in
            let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
            _ = pgws_set_thread_name(String(box.name.prefix(15)))
            box.body()
            return nil
        }, box)
    precondition(result == 0, "pthread_create failed: \(result)")
    pthread_detach(thread)
}
