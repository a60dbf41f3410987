/**
 * A TCP forwarder: makes a server that listens on loopback (firn serve from
 * test/helpers/server.ts) reachable from the fleet's hosts, by listening on the fleet's gateway
 * address and piping each connection to the loopback port.
 */
import { createConnection, createServer, type Socket } from 'node:net';

export interface Forwarder {
  readonly port: number;
  close(): Promise<void>;
}

export async function startForwarder(
  listenHost: string,
  target: { readonly host: string; readonly port: number },
): Promise<Forwarder> {
  const sockets = new Set<Socket>();
  const track = (socket: Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  const server = createServer((client) => {
    const upstream = createConnection(target);
    track(client);
    track(upstream);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, resolve);
  });
  server.unref();
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}
