/**
 * The package's main entry (`import { connect } from 'viewstamp'`): the lock API (`connect`,
 * `LockClient`, `Lock`), the lock services underneath, and the error classes. See README.md for
 * the protocol, error codes and limits.
 */
export * from './locks.js';
export { ViewstampError, RpcError } from '../lib/errors.js';
export * from './protocol.js';
export * from './basic-server.js';
export * from './basic-client.js';
export * from './cache-protocol.js';
export * from './cache-server.js';
export * from './cache-client.js';
export * from './cache-host.js';
export * from './rsm-connection.js';
export * from './replicated-host.js';
export { connectFiles, type ConnectFilesOptions } from './file/connect.js';
export { FileClient, FileError, FILE_OK, FILE_NOT_FOUND, DEFAULT_FILE_LOCK, type FileClientOptions } from './file/file-client.js';
export { FileStatus, FILE_COUNT, MAX_APPEND_BYTES } from './file/file-protocol.js';
export { FileService, type LockHolds } from './file/file-service.js';
export { LockedFileService } from './file/locked-files.js';
