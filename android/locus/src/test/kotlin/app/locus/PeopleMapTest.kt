package app.locus

import app.locus.ffi.GeoLocation
import app.locus.ffi.PhoneEvent
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Test
import kotlin.test.assertEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import kotlin.time.Duration.Companion.seconds

/** The map's model alone: plain flows in, pins and bounds out; no phone needed. */
class PeopleMapTest {
    private val vienna = GeoLocation(lat = 48.2085, lon = 16.3721, radiusM = 1000.0, timestamp = null)
    private val sydney = GeoLocation(lat = -33.8688, lon = 151.2093, radiusM = 0.0, timestamp = null)

    private fun friend(uri: String, status: String, location: GeoLocation?) =
        PhoneEvent.Friend(uri = uri, status = status, location = location)

    @Test
    fun `friends without a position and ended calls have no pin`() {
        val pins = PeopleMap.pinsOf(
            friends = mapOf(
                "sip:carol@example.test" to friend("sip:carol@example.test", "open", vienna),
                "sip:dave@example.test" to friend("sip:dave@example.test", "open", null),
                "sip:bea@example.test" to friend("sip:bea@example.test", "closed", sydney),
            ),
            calls = mapOf(1uL to "ended", 2uL to "connected"),
            callPeers = mapOf(2uL to "sip:bob@example.test"),
            peerLocations = mapOf(1uL to vienna, 2uL to sydney),
        )
        assertEquals(listOf("call:2", "friend:sip:bea@example.test", "friend:sip:carol@example.test"), pins.map { it.key })
        assertEquals(Pin("call:2", PinKind.CALL, "sip:bob@example.test", -33.8688, 151.2093, 0.0, "connected"), pins[0])
        assertEquals("closed", pins[1].status)
    }

    @Test
    fun `bounds hold every pin with its uncertainty`() {
        assertNull(PeopleMap.boundsOf(emptyList()))
        val one = PeopleMap.boundsOf(listOf(Pin("p", PinKind.FRIEND, "p", 48.2085, 16.3721, 1000.0, "open")))!!
        // 1 km is ~0.009° of latitude, and ~0.0135° of longitude at 48°N.
        assertEquals(48.2085 - 0.00898, one.south, 1e-4)
        assertEquals(48.2085 + 0.00898, one.north, 1e-4)
        assertEquals(16.3721 - 0.01347, one.west, 1e-4)
        val two = PeopleMap.boundsOf(
            listOf(
                Pin("a", PinKind.FRIEND, "a", 48.2085, 16.3721, 0.0, "open"),
                Pin("b", PinKind.CALL, "b", -33.8688, 151.2093, 0.0, "connected"),
            ),
        )
        assertEquals(MapBounds(-33.8688, 16.3721, 48.2085, 151.2093), two)
    }

    @Test
    fun `pins follow the phone's flows`() = runBlocking {
        val friends = MutableStateFlow<Map<String, PhoneEvent.Friend>>(emptyMap())
        val calls = MutableStateFlow<Map<ULong, String>>(emptyMap())
        val peers = MutableStateFlow<Map<ULong, String>>(emptyMap())
        val locations = MutableStateFlow<Map<ULong, GeoLocation>>(emptyMap())
        val scope = CoroutineScope(Dispatchers.Default)
        val map = PeopleMap(friends, calls, peers, locations, scope)
        calls.value = mapOf(7uL to "incoming")
        peers.value = mapOf(7uL to "sip:bob@example.test")
        locations.value = mapOf(7uL to sydney)
        withTimeout(5.seconds) { map.pins.first { it.size == 1 } }
        assertEquals(-33.8688, withTimeout(5.seconds) { map.bounds.first { it != null } }!!.south, 1e-9)
        calls.value = mapOf(7uL to "ended")
        withTimeout(5.seconds) { map.pins.first { it.isEmpty() } }
        assertTrue(withTimeout(5.seconds) { map.bounds.first { it == null } } == null)
        scope.cancel()
    }
}
