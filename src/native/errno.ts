/**
 * C error codes (the library returns -errno) turned into errors that say
 * what could not be done and why.
 *
 * @module
 */
import { constants } from "node:os";

const NAMES = new Map<number, string>(
  Object.entries(constants.errno).map(([name, code]) => [code, name]),
);

/** Why, in words, for the codes the library returns. */
const REASONS: Record<string, string> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EISDIR: "is a directory",
  EINVAL: "invalid argument",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  ERANGE: "page range outside the file",
  ENOMEM: "out of memory",
  EOPNOTSUPP: "not supported by this kernel",
  ENOTSUP: "not supported by this kernel",
  ENOTTY: "not supported by this kernel",
  EFBIG: "file too large",
  E2BIG: "too many distinct contents",
  EBADF: "file not opened for writing",
  EIO: "input/output error",
  ESRCH: "no such process",
  EROFS: "read-only file system",
  ELOOP: "a symbolic link where none is followed, or a loop of links",
  ESTALE: "the file shrank since it was opened",
};

/** An error from the C library, carrying the errno name (`code`). */
export class NativeError extends Error {
  /** The errno name, such as `ENOENT`. */
  readonly code: string;
  /** Why, without what could not be done: `no such file (ENOENT)`. */
  readonly reason: string;

  /**
   * An error of the C library, made from a result code by `check()`.
   *
   * @param message What could not be done, and why
   * @param code The errno name, such as `ENOENT`
   * @param reason Why, for a message that says what itself (default: `message`)
   */
  constructor(message: string, code: string, reason = message) {
    super(message);
    this.name = "NativeError";
    this.code = code;
    this.reason = reason;
  }
}

/**
 * Passes a non-negative result through; turns -errno into a {@linkcode NativeError}.
 *
 * @param result what the C function returned
 * @param what what was being done, as the start of the message ("Cannot open guest RAM \"x\"")
 * @param reasons clearer words for some codes in this call's context
 */
export function check(result: number, what: string, reasons: Record<string, string> = {}): number {
  if (result >= 0) return result;
  const code = NAMES.get(-result) ?? `errno ${-result}`;
  const reason = reasons[code] ?? REASONS[code] ?? code;
  throw new NativeError(`${what}: ${reason} (${code})`, code, `${reason} (${code})`);
}
