/**
 * Text from elsewhere (a peer's ERROR, a path, a guest's name) and what a
 * terminal would do with it. Shared by the protocol (a peer's words and the
 * names it gives) and the transport (file names in its errors).
 *
 * @module
 */

/**
 * What a terminal acts on: C0 and C1 controls and DEL (escape sequences,
 * new lines), bidirectional controls (they reorder what follows them on
 * the line: U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069) and Unicode's
 * line and paragraph separators, as a character class's contents.
 */
const TERMINAL_ACTS_ON =
  "\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069";

/**
 * What a terminal shows as nothing, besides: the soft hyphen, zero-width
 * and other invisible format characters, and tags.
 */
const INVISIBLE =
  "\\xad\\u180e\\u200b-\\u200f\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb\\u{e0000}-\\u{e007f}";

const ACTS_ON_TERMINAL = new RegExp(`[${TERMINAL_ACTS_ON}]`, "u");
const NOT_PRINTABLE = new RegExp(`[${TERMINAL_ACTS_ON}${INVISIBLE}]`, "gu");

/**
 * Whether `text` holds anything a terminal acts on (see TERMINAL_ACTS_ON):
 * printed raw, it could move the cursor, reorder the line or add one.
 */
export function actsOnTerminal(text: string): boolean {
  return ACTS_ON_TERMINAL.test(text);
}

/**
 * `text` on one line: control characters (C0, DEL, C1) and the soft
 * hyphen come out as `\xNN`, and Unicode's line and paragraph separators,
 * bidirectional controls (U+061C included), zero-width and other invisible
 * format characters as `\uNNNN` (tags as `\u{NNNNN}`), so the text cannot
 * move the cursor, recolour a terminal, reorder what a log shows, nor add
 * a line of its own to it.
 */
export function printable(text: string): string {
  return text.replace(NOT_PRINTABLE, (c) => {
    const code = c.codePointAt(0)!;
    return code < 0x100
      ? `\\x${code.toString(16).padStart(2, "0")}`
      : code < 0x10000
      ? `\\u${code.toString(16).padStart(4, "0")}`
      : `\\u{${code.toString(16)}}`;
  });
}
