import CLinuxShims
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// Runs `body` on a new OS thread and returns when it has finished. The database threads
/// block in libpq and poll(2), which must never happen on an event loop or in Swift's
/// cooperative thread pool; the awaiting task is suspended meanwhile, not blocked.
func runOnBackgroundThread(name: String, _ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        startBackgroundThread(name: name) {
            body()
            continuation.resume()
        }
    }
}

/// A service's database thread: runs `body` on its own thread until it returns. Graceful
/// shutdown and cancellation of the task both call `stop`, which must make `body` return.
func runServiceThread(
    name: String, stop: @escaping @Sendable () -> Void, _ body: @escaping @Sendable () -> Void
) async {
    await withGracefulShutdownHandler {
        await withTaskCancellationHandler {
            await runOnBackgroundThread(name: name, body)
        } onCancel: {
            stop()
        }
    } onGracefulShutdown: {
        stop()
    }
}

/// Starts a detached OS thread.
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
