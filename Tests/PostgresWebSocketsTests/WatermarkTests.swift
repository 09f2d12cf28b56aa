import Testing

@testable import PostgresWebSockets

@Suite("WatermarkedLevel")
struct WatermarkTests {
    @Test("the producer stops at the high mark and is woken once, when the level is back at the low mark")
    func stopAndWake() {
        let level = WatermarkedLevel(Watermark(low: 2, high: 5))
        #expect(level.add(4) == false)
        #expect(level.add(1) == true)
        #expect(level.add(3) == true, "still above: stays stopped")
        #expect(level.take(4) == false, "4 left: above low")
        #expect(level.take(2) == true, "2 left: wake")
        #expect(level.take(1) == false, "woken once per stop")
        #expect(level.value == 1)
    }

    @Test("an add refused by the limit changes nothing")
    func limit() {
        let level = WatermarkedLevel(Watermark(low: 1, high: 3))
        #expect(level.add(2, limit: 3) == false)
        #expect(level.add(2, limit: 3) == nil)
        #expect(level.value == 2)
        #expect(level.add(1, limit: 3) == true)
    }

    @Test("a producer told to stop is always woken once consumers drain it, however they race")
    func noLostWakeUp() async {
        for _ in 0..<200 {
            let level = WatermarkedLevel(Watermark(low: 10, high: 20))
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for _ in 0..<1000 { _ = level.add(1) }
                }
                group.addTask {
                    var taken = 0
                    while taken < 1000 {
                        guard level.value > 0 else {
                            await Task.yield()
                            continue
                        }
                        _ = level.take(1)
                        taken += 1
                    }
                }
            }
            // Drained to zero: a stop the consumers did not answer would still be pending here.
            #expect(level.value == 0)
            #expect(level.release() == false)
        }
    }
}
