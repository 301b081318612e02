package app.locus

import app.locus.ffi.AccountSettings
import app.locus.ffi.CallAudioSettings
import app.locus.ffi.GeoLocation
import app.locus.ffi.Phone
import app.locus.ffi.PhoneEvent
import app.locus.ffi.PhoneListener
import app.locus.ffi.RegistrationState
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.channels.BufferOverflow
import kotlinx.coroutines.flow.MutableSharedFlow
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.SharedFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asSharedFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update

/**
 * The phone as Kotlin code wants it: registration state as a [StateFlow],
 * events as a [SharedFlow], commands as plain calls. No Android imports, so
 * the app's view models and the JVM tests use the same class.
 */
class LocusPhone private constructor(
    private val listener: FlowListener,
    private val phone: Phone,
) : AutoCloseable {
    /** Where the registration stands; starts at [RegistrationState.UNREGISTERED]. */
    val registration: StateFlow<RegistrationState> = listener.registration.asStateFlow()

    /** Every event, with the most recent ones replayed to new collectors. */
    val events: SharedFlow<PhoneEvent> = listener.events.asSharedFlow()

    /** Each call's state by id: incoming, calling, ringing, connected, held, ended. */
    val calls: StateFlow<Map<ULong, String>> = listener.calls.asStateFlow()

    /**
     * The SIP server in use (its URI), once known: set by each registration
     * and each move to another server (a migration, a failover).
     */
    val server: StateFlow<String?> = listener.server.asStateFlow()

    /**
     * Where the peer of each call is, by call id, when it shares it: the
     * caller's position from its INVITE, the callee's sent once it answered.
     */
    val peerLocations: StateFlow<Map<ULong, GeoLocation>> = listener.peerLocations.asStateFlow()

    /** Whom each call is with, by call id: the caller's address, or whom we called. */
    val callPeers: StateFlow<Map<ULong, String>> = listener.callPeers.asStateFlow()

    /** The friends we watch, by address: their last status and position. */
    val friends: StateFlow<Map<String, PhoneEvent.Friend>> = listener.friends.asStateFlow()

    /** The local SIP address, `ip:port`. */
    val localAddress: String get() = phone.localAddress()

    /** Starts registering; progress arrives on [registration] and [events]. */
    fun register() = phone.register()

    /** Removes the registration. */
    fun unregister() = phone.unregister()

    /**
     * Calls [target] (a SIP URI or a user name); returns the call's id. Without
     * WAV files the microphone and loudspeaker are used.
     */
    suspend fun call(target: String, audioIn: String? = null, audioOut: String? = null): ULong =
        phone.call(target, audio(audioIn, audioOut)).also { call ->
            listener.callPeers.update { it + (call to target) }
        }

    /** The people to show on the map: peers of calls and friends, where they share it. */
    fun peopleMap(scope: CoroutineScope) = PeopleMap(friends, calls, callPeers, peerLocations, scope)

    /** Answers an incoming call; without WAV files with the microphone and loudspeaker. */
    fun answer(call: ULong, audioIn: String? = null, audioOut: String? = null) =
        phone.answer(call, audio(audioIn, audioOut))

    /** Refuses an incoming call, as busy or as declined. */
    fun reject(call: ULong, busy: Boolean = true) = phone.reject(call, busy)

    /** Ends a call, whatever its state. */
    fun hangUp(call: ULong) = phone.hangup(call)

    /** Puts a call on hold. */
    fun hold(call: ULong) = phone.hold(call)

    /** Takes a call off hold. */
    fun resume(call: ULong) = phone.resume(call)

    /** Sends DTMF digits in a connected call. */
    fun sendDtmf(call: ULong, digits: String) = phone.sendDtmf(call, digits)

    /** Mutes or unmutes the microphone in a call (the peer hears silence). */
    fun mute(call: ULong, muted: Boolean = true) = phone.mute(call, muted)

    /**
     * Sets our position (null forgets it); it is sent only to contacts we share it with, in new
     * calls and to the peer of a call under way once we moved beyond what it knows. Feed every
     * fix: the core decides what is news.
     */
    fun setLocation(location: GeoLocation?) = phone.setLocation(location)

    /**
     * Shares our position with [contacts] (`bob@example.test`) in the calls we
     * place to them or answer from them, coarsened to about [precisionM] metres when given.
     * Sharing is off until this is called.
     */
    fun shareLocation(contacts: List<String>, precisionM: Double? = null) =
        phone.shareLocation(contacts, precisionM)

    /** Stops sharing our position with anyone. */
    fun stopSharingLocation() = phone.stopSharingLocation()

    /** Publishes our presence, with our position when sharing is on. */
    fun publishPresence(available: Boolean = true) = phone.publishPresence(available)

    /** Watches [friend]'s presence (a SIP URI or a user name); see [friends]. */
    fun watch(friend: String) = phone.watch(friend)

    /**
     * Tells the phone the network changed (wire it to Android's
     * `ConnectivityManager.NetworkCallback`): it registers again at once.
     */
    fun networkChanged() = phone.networkChanged()

    private fun audio(audioIn: String?, audioOut: String?) =
        CallAudioSettings(audioIn, audioOut, soundCard = audioIn == null && audioOut == null)

    /** Unregisters (waiting a few seconds at most) and stops the phone. */
    suspend fun shutdown() = phone.shutdown()

    /** Frees the native phone; call [shutdown] first to unregister cleanly. */
    override fun close() = phone.close()

    /** Bridges the Rust listener into flows; called on the phone's thread. */
    private class FlowListener : PhoneListener {
        val registration = MutableStateFlow(RegistrationState.UNREGISTERED)
        val events = MutableSharedFlow<PhoneEvent>(
            replay = EVENT_REPLAY,
            extraBufferCapacity = EVENT_BUFFER,
            onBufferOverflow = BufferOverflow.DROP_OLDEST,
        )

        val calls = MutableStateFlow<Map<ULong, String>>(emptyMap())
        val server = MutableStateFlow<String?>(null)
        val friends = MutableStateFlow<Map<String, PhoneEvent.Friend>>(emptyMap())
        val peerLocations = MutableStateFlow<Map<ULong, GeoLocation>>(emptyMap())
        val callPeers = MutableStateFlow<Map<ULong, String>>(emptyMap())

        override fun onEvent(event: PhoneEvent) {
            when (event) {
                is PhoneEvent.IncomingCall -> {
                    calls.update { it + (event.call to "incoming") }
                    callPeers.update { it + (event.call to event.from) }
                    event.location?.let { where -> peerLocations.update { it + (event.call to where) } }
                }
                is PhoneEvent.CallLocation -> peerLocations.update { it + (event.call to event.location) }
                is PhoneEvent.CallState -> calls.update { it + (event.call to event.state) }
                is PhoneEvent.Registered -> server.value = event.server
                is PhoneEvent.ServerChanged -> server.value = event.to
                is PhoneEvent.Friend -> friends.update { it + (event.uri to event) }
                else -> {}
            }
            events.tryEmit(event)
        }

        override fun onRegistrationState(state: RegistrationState) {
            registration.value = state
        }
    }

    companion object {
        private const val EVENT_REPLAY = 32
        private const val EVENT_BUFFER = 256

        /** Starts a phone for [settings]; throws `LocusException` if it cannot. */
        fun start(settings: AccountSettings): LocusPhone {
            val listener = FlowListener()
            return LocusPhone(listener, Phone(settings, listener))
        }
    }
}
