/**
 * For tests/connection_socket_test.ts, run in a network namespace of its
 * own whose `net.ipv4.tcp_wmem` the test set: connects to itself on
 * loopback and prints `{"size"}`, what `deepenSendBuffer()` left.
 *
 * @module
 */
import { ConnectionSocket } from "../src/native/connection_socket.ts";
import { loopbackPair } from "./_fixtures.ts";

using conns = await loopbackPair();
const { near } = conns;
const socket = ConnectionSocket.find(near.localAddr.port, near.remoteAddr.port);
console.log(JSON.stringify({ size: socket?.deepenSendBuffer() ?? null }));
