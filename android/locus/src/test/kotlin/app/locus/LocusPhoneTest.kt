package app.locus

import app.locus.ffi.AccountSettings
import app.locus.ffi.FailureReason
import app.locus.ffi.GeoLocation
import app.locus.ffi.LocusException
import app.locus.ffi.PhoneEvent
import app.locus.ffi.RegistrationState
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Test
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import org.junit.jupiter.api.assertThrows
import kotlin.test.assertEquals
import kotlin.time.Duration.Companion.seconds

/**
 * Kotlin -> Rust -> Kamailio. The Kamailio instance is started by
 * `cargo test -p locus-tests --test kotlin`, which passes its address here.
 */
class LocusPhoneTest {
    private fun env(name: String): String =
        requireNotNull(System.getenv(name)) { "$name is not set: run this through `cargo test -p locus-tests --test kotlin`" }

    private fun settings(
        password: String = env("LOCUS_TEST_PASSWORD"),
        user: String = env("LOCUS_TEST_USER"),
    ) = AccountSettings(
        user = user,
        domain = env("LOCUS_TEST_DOMAIN"),
        password = password,
        server = env("LOCUS_TEST_SERVER"),
        listen = "127.0.0.1:0",
        caFile = null,
        expires = null,
        stateDir = null,
    )

    @Test
    fun `registers with Kamailio and unregisters`() = runBlocking {
        LocusPhone.start(settings()).use { phone ->
            phone.register()
            withTimeout(10.seconds) { phone.registration.first { it == RegistrationState.REGISTERED } }
            val registered = phone.events.first { it is PhoneEvent.Registered } as PhoneEvent.Registered
            assertEquals(env("LOCUS_TEST_SERVER"), registered.server)

            phone.unregister()
            withTimeout(10.seconds) { phone.registration.first { it == RegistrationState.UNREGISTERED } }
            phone.shutdown()
        }
    }

    @Test
    fun `follows the discovery service to another server when its server drains`() = runBlocking {
        val discovery = env("LOCUS_TEST_DISCOVERY")
        val drained = env("LOCUS_TEST_DRAIN_SERVER")
        val discovered = settings().copy(server = null, discovery = discovery)
        LocusPhone.start(discovered).use { phone ->
            phone.register()
            withTimeout(10.seconds) { phone.registration.first { it == RegistrationState.REGISTERED } }
            assertEquals(drained, phone.server.value)

            // What a cloud manager's migration hook does.
            val request = HttpRequest.newBuilder(URI("$discovery/v1/admin/servers/primary/state"))
                .header("Authorization", "Bearer ${env("LOCUS_TEST_DISCOVERY_TOKEN")}")
                .header("Content-Type", "application/json")
                .PUT(HttpRequest.BodyPublishers.ofString("""{"state": "draining"}"""))
                .build()
            val answer = HttpClient.newBuilder().proxy(HttpClient.Builder.NO_PROXY).build()
                .send(request, HttpResponse.BodyHandlers.ofString())
            assertEquals(200, answer.statusCode(), answer.body())

            val moved = withTimeout(10.seconds) {
                phone.events.first { it is PhoneEvent.ServerChanged } as PhoneEvent.ServerChanged
            }
            assertEquals(drained, moved.from)
            withTimeout(10.seconds) { phone.server.first { it != drained } }
            withTimeout(10.seconds) { phone.registration.first { it == RegistrationState.REGISTERED } }
            phone.shutdown()
        }
    }

    @Test
    fun `wrong password ends in FAILED with reason AUTH`() = runBlocking {
        LocusPhone.start(settings(password = "wrong")).use { phone ->
            phone.register()
            withTimeout(10.seconds) { phone.registration.first { it == RegistrationState.FAILED } }
            val failed = phone.events.first { it is PhoneEvent.RegistrationFailed } as PhoneEvent.RegistrationFailed
            assertEquals(FailureReason.AUTH, failed.reason)
            assertEquals(401.toUShort(), failed.status)
            phone.shutdown()
        }
    }

    @Test
    fun `two phones call each other through Kamailio`() = runBlocking {
        val peer = env("LOCUS_TEST_PEER_USER")
        LocusPhone.start(settings()).use { alice ->
            LocusPhone.start(settings(user = peer, password = env("LOCUS_TEST_PEER_PASSWORD"))).use { bob ->
                alice.register()
                bob.register()
                withTimeout(10.seconds) {
                    alice.registration.first { it == RegistrationState.REGISTERED }
                    bob.registration.first { it == RegistrationState.REGISTERED }
                }
                // Alice shares where she is with bob, to about a kilometre.
                alice.setLocation(GeoLocation(lat = 48.2085, lon = 16.3721, radiusM = 10.0, timestamp = null))
                alice.shareLocation(listOf("$peer@${env("LOCUS_TEST_DOMAIN")}"), precisionM = 1000.0)
                // Bob shares his with alice, exactly, when he answers her.
                bob.setLocation(GeoLocation(lat = -33.8688, lon = 151.2093, radiusM = 50.0, timestamp = null))
                bob.shareLocation(listOf("${env("LOCUS_TEST_USER")}@${env("LOCUS_TEST_DOMAIN")}"))
                val answering = launch {
                    val incoming = bob.events.first { it is PhoneEvent.IncomingCall } as PhoneEvent.IncomingCall
                    val where = requireNotNull(incoming.location) { "bob sees no location" }
                    assertEquals(48.2085, where.lat, 0.01)
                    assertEquals(16.3721, where.lon, 0.02)
                    assertEquals(1000.0, where.radiusM)
                    assertEquals(where, bob.peerLocations.value[incoming.call])
                    bob.answer(incoming.call)
                }
                val call = alice.call(peer)
                withTimeout(10.seconds) { alice.calls.first { it[call] == "connected" } }
                answering.join()
                val bobIs = withTimeout(10.seconds) { alice.peerLocations.first { it.containsKey(call) } }
                assertEquals(-33.8688, requireNotNull(bobIs[call]).lat, 1e-9)
                assertEquals(50.0, requireNotNull(bobIs[call]).radiusM)
                // Alice's map shows bob where he said he is.
                val mapScope = CoroutineScope(Dispatchers.Default)
                val pins = withTimeout(10.seconds) { alice.peopleMap(mapScope).pins.first { it.isNotEmpty() } }
                assertEquals(listOf(Pin("call:$call", PinKind.CALL, peer, -33.8688, 151.2093, 50.0, "connected")), pins)
                mapScope.cancel()
                alice.mute(call)
                alice.sendDtmf(call, "1")
                alice.mute(call, muted = false)
                alice.hold(call)
                withTimeout(10.seconds) { alice.calls.first { it[call] == "held" } }
                alice.resume(call)
                withTimeout(10.seconds) { alice.calls.first { it[call] == "connected" } }
                alice.hangUp(call)
                withTimeout(10.seconds) { alice.calls.first { it[call] == "ended" } }
                // Presence: bob watches alice, who publishes with her position.
                bob.watch(env("LOCUS_TEST_USER"))
                alice.publishPresence(available = true)
                val friend = "sip:${env("LOCUS_TEST_USER")}@${env("LOCUS_TEST_DOMAIN")}"
                val seen = withTimeout(10.seconds) {
                    bob.friends.first { it[friend]?.status == "open" }
                }
                assertEquals(48.2085, requireNotNull(seen[friend]?.location).lat, 0.01)
                withTimeout(10.seconds) { bob.calls.first { states -> states.values.any { it == "ended" } } }
                alice.shutdown()
                bob.shutdown()
            }
        }
    }

    @Test
    fun `unusable settings throw`() {
        assertThrows<LocusException.InvalidSettings> { LocusPhone.start(settings().copy(listen = "not an address")) }
        assertThrows<LocusException.InvalidSettings> { LocusPhone.start(settings().copy(user = "")) }
        assertThrows<LocusException.InvalidSettings> { LocusPhone.start(settings().copy(codecs = listOf("speex"))) }
    }

    @Test
    fun `commands after shutdown report Stopped`() = runBlocking {
        val phone = LocusPhone.start(settings())
        phone.shutdown()
        assertThrows<LocusException.Stopped> { phone.register() }
        phone.close()
    }
}
