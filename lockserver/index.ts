/** The lock services. See README.md for the protocol, error codes and limits. */
export * from './protocol.js';
export * from './basic-server.js';
export * from './basic-client.js';
export * from './cache-protocol.js';
export * from './cache-server.js';
export * from './cache-client.js';
export * from './cache-host.js';
export * from './rsm-connection.js';
export * from './replicated-host.js';
