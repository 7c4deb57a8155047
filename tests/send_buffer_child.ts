/**
 * For tests/connection_socket_test.ts, run in a network namespace of its
 * own whose `net.ipv4.tcp_wmem` the test set: connects to itself on
 * loopback and prints `{"size"}`, what `deepenSendBuffer()` left.
 *
 * @module
 */
import { ConnectionSocket } from "../src/native/connection_socket.ts";

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
const server = await listener.accept();
const socket = ConnectionSocket.find(client.localAddr.port, client.remoteAddr.port);
console.log(JSON.stringify({ size: socket?.deepenSendBuffer() ?? null }));
client.close();
server.close();
listener.close();
