package app.locus

import app.locus.ffi.GeoLocation
import app.locus.ffi.PhoneEvent
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.SharingStarted
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.combine
import kotlinx.coroutines.flow.map
import kotlinx.coroutines.flow.stateIn
import kotlin.math.cos
import kotlin.math.max
import kotlin.math.min

/** Who a pin stands for. */
enum class PinKind { CALL, FRIEND }

/**
 * One person on the map: the peer of a call in progress, or a friend who
 * shares where they are. [status] is the call's state or the friend's
 * presence (`open`, `closed`, ...), for the map to style the pin.
 */
data class Pin(
    val key: String,
    val kind: PinKind,
    val label: String,
    val lat: Double,
    val lon: Double,
    val radiusM: Double,
    val status: String,
)

/** The area the map shows to have every pin, uncertainty circles included. */
data class MapBounds(val south: Double, val west: Double, val north: Double, val east: Double)

/**
 * What the map shows, as plain values: the views only draw [pins] and
 * zoom to [bounds]. Built from the phone's flows (see [LocusPhone.peopleMap]),
 * so it runs, and is tested, on a JVM.
 */
class PeopleMap(
    friends: Flow<Map<String, PhoneEvent.Friend>>,
    calls: Flow<Map<ULong, String>>,
    callPeers: Flow<Map<ULong, String>>,
    peerLocations: Flow<Map<ULong, GeoLocation>>,
    scope: CoroutineScope,
) {
    /** Calls first (newest first), then friends by address. */
    val pins: StateFlow<List<Pin>> =
        combine(friends, calls, callPeers, peerLocations, ::pinsOf)
            .stateIn(scope, SharingStarted.Eagerly, emptyList())

    /** Where to look: every pin, or null when there is none. */
    val bounds: StateFlow<MapBounds?> =
        pins.map(::boundsOf).stateIn(scope, SharingStarted.Eagerly, null)

    companion object {
        private const val METRES_PER_DEGREE = 111_320.0

        /** The pins for these friends and calls; ended calls and unknown places have none. */
        fun pinsOf(
            friends: Map<String, PhoneEvent.Friend>,
            calls: Map<ULong, String>,
            callPeers: Map<ULong, String>,
            peerLocations: Map<ULong, GeoLocation>,
        ): List<Pin> {
            val callPins = peerLocations.entries
                .filter { (call, _) -> calls[call].let { it != null && it != "ended" } }
                .sortedByDescending { it.key }
                .map { (call, where) ->
                    val state = calls.getValue(call)
                    pin("call:$call", PinKind.CALL, callPeers[call] ?: "call $call", where, state)
                }
            val friendPins = friends.values
                .mapNotNull { f -> f.location?.let { pin("friend:${f.uri}", PinKind.FRIEND, f.uri, it, f.status) } }
                .sortedBy { it.label }
            return callPins + friendPins
        }

        /** The smallest area holding every pin's circle, or null for no pins. */
        fun boundsOf(pins: List<Pin>): MapBounds? = pins
            .map { p ->
                val dLat = p.radiusM / METRES_PER_DEGREE
                // Degrees of longitude shrink towards the poles; stop short of dividing by zero.
                val dLon = p.radiusM / (METRES_PER_DEGREE * max(cos(Math.toRadians(p.lat)), 0.01))
                MapBounds(
                    south = max(p.lat - dLat, -90.0),
                    west = max(p.lon - dLon, -180.0),
                    north = min(p.lat + dLat, 90.0),
                    east = min(p.lon + dLon, 180.0),
                )
            }
            .reduceOrNull { a, b ->
                MapBounds(min(a.south, b.south), min(a.west, b.west), max(a.north, b.north), max(a.east, b.east))
            }

        private fun pin(key: String, kind: PinKind, label: String, where: GeoLocation, status: String) =
            Pin(key, kind, label, where.lat, where.lon, where.radiusM, status)
    }
}
