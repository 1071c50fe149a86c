import GuestVaultCore
import GuestVaultSystem
import Logging

extension TPMServer {
    // MARK: Data channel

    /// Reads TPM commands and answers them. Returns false when the connection is done.
    ///
    /// The hot path: the receive, the command, the TPM's response and its framing go
    /// through buffers the server keeps, so a round trip allocates nothing once they have
    /// grown to the largest command and response seen.
    func serviceData(_ connection: Connection, buffers: inout DataPathBuffers) -> Bool {
        let count: Int
        do {
            count = try connection.socket.receive(into: &buffers.receive, at: 0, maximum: buffers.receive.count)
        } catch {
            return false
        }
        guard count > 0 else { return false }
        if buffers.decoderOwner != connection.serial {
            buffers.decoder = DataChannelDecoder()
            buffers.decoderOwner = connection.serial
        }
        let maximum = Int(max(bufferSize, 4096))
        if buffers.decoder.maximumCommandSize != maximum { buffers.decoder.maximumCommandSize = maximum }
        // One receive holding exactly one raw command (what QEMU and tpm2-tss send) runs
        // where it was received; anything else goes through the decoder.
        if buffers.decoder.consumeIfSingleCommand(buffers.receive[0..<count]) {
            execute(&buffers.receive, count: count, locality: locality, response: &buffers.response)
            return reply(buffers.response, on: connection, channel: "data")
        }
        buffers.decoder.append(buffers.receive[0..<count])
        while true {
            let header: TPMCommandFrame.Header?
            do {
                header = try buffers.decoder.next(into: &buffers.command)
            } catch {
                logger.warning("data channel: \(error.message); answered with an error and closed the connection")
                _ = reply(error.errorResponse, on: connection, channel: "data")
                return false
            }
            guard let header else { return true }
            if let prefixLocality = header.locality { locality = prefixLocality }
            execute(&buffers.command, locality: locality, response: &buffers.response)
            let sent: Bool
            if header.prefixed {
                DataChannelResponse.encode(buffers.response, prefixed: true, into: &buffers.framed)
                sent = reply(buffers.framed, on: connection, channel: "data")
            } else {
                sent = reply(buffers.response, on: connection, channel: "data")
            }
            guard sent else { return false }
        }
    }

    /// One TPM command. While the TPM is not running, or after an NV change could not be
    /// committed (until the next CMD_INIT), the answer is TPM_RC_FAILURE.
    ///
    /// The command is taken from `command` (which libtpms may overwrite), its response into
    /// `response` (replacing its contents, keeping its storage).
    func execute(_ command: inout [UInt8], count: Int? = nil, locality: UInt8, response: inout [UInt8]) {
        // TPM_RC_FAILURE while not initialised, as swtpm answers (QEMU probes before INIT).
        guard let engine, !nvFailed else {
            response = DataChannelResponse.error(DataChannelResponse.failureResponseCode)
            return
        }
        do {
            try engine.execute(&command, count: count, locality: locality, response: &response)
        } catch {
            if ErrorChain.contains(.storage, in: error) {
                nvFailed = true
                logger.critical("an NV change of the TPM could not be committed; the TPM answers TPM_RC_FAILURE until the VM resets it (CMD_INIT), which restarts it from the last committed state",
                                metadata: ["error": "\(ErrorChain.message(of: error))"])
            } else {
                logger.error("TPM command failed", metadata: ["error": "\(ErrorChain.message(of: error))"])
            }
            response = DataChannelResponse.error(DataChannelResponse.failureResponseCode)
        }
    }

    // MARK: Control channel

    /// One receive is appended as a unit (swtpm's framing: a receive's trailing bytes
    /// belong to its request, as QEMU pads SET_LOCALITY); a request may span receives.
    func serviceControl(_ connection: Connection) -> Bool {
        let received: (bytes: [UInt8], descriptor: Int32?)
        do {
            received = try connection.socket.receiveWithDescriptor()
        } catch {
            return false
        }
        // A passed descriptor lives as long as this receive: SET_DATAFD takes it, anything
        // else leaves it to be closed here.
        connection.passedDescriptor = received.descriptor.map {
            StreamSocket(adopting: $0, name: "data channel (passed descriptor)")
        }
        defer { connection.passedDescriptor = nil }
        guard !received.bytes.isEmpty else { return false }
        connection.control.append(received.bytes)
        let buffered = bufferedControlBytes
        guard buffered <= configuration.limits.maximumBufferedBytes else {
            logger.warning("control channel: unfinished requests hold more than \(configuration.limits.maximumBufferedBytes) bytes; closed the connection",
                           metadata: ["bufferedBytes": "\(buffered)"])
            return false
        }
        while true {
            let request: ControlRequest?
            do {
                request = try connection.control.next()
            } catch {
                logger.warning("control channel: \(error.message); answered and closed the connection")
                if let code = error.reply { _ = reply(ControlResponse.result(code).encoded(), on: connection, channel: "control") }
                return false
            }
            guard let request else {
                if connection.control.bufferedByteCount == 0 {
                    connection.requestStarted = nil
                } else if connection.requestStarted == nil {
                    connection.requestStarted = Self.milliseconds()
                }
                return true
            }
            connection.requestStarted = connection.control.bufferedByteCount == 0 ? nil : Self.milliseconds()
            let response = handle(request, connection: connection)
            let encoded = response.encoded()
            logger.debug("control: \(request.command) -> \(encoded.prefix(4).map { String($0, radix: 16) }.map { $0.count == 1 ? "0" + $0 : $0 }.joined())")
            let sent = reply(encoded, on: connection, channel: "control")
            // release-lock-outgoing: QEMU has taken the last blob (swtpm releases once the
            // savestate reply is written).
            if releaseLockAfterReply {
                releaseLockAfterReply = false
                if sent { releaseWriterLockAfterHandOff() }
            }
            guard sent else { return false }
            if shutdownRequested { return false }
        }
    }
}
