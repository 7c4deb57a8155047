/**
 * Text from elsewhere (a peer's ERROR, a path) made safe to print on one
 * line. Shared by the protocol (a peer's words) and the transport (file
 * names in its errors).
 *
 * @module
 */

/**
 * `text` on one line: control characters (C0, DEL, C1) and the soft
 * hyphen come out as `\xNN`, and Unicode's line and paragraph separators,
 * bidirectional controls (U+061C included), zero-width and other invisible
 * format characters as `\uNNNN` (tags as `\u{NNNNN}`), so the text cannot
 * move the cursor, recolour a terminal, reorder what a log shows, nor add
 * a line of its own to it.
 */
export function printable(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\u{e0000}-\u{e007f}]/gu,
    (c) => {
      const code = c.codePointAt(0)!;
      return code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : code < 0x10000
        ? `\\u${code.toString(16).padStart(4, "0")}`
        : `\\u{${code.toString(16)}}`;
    },
  );
}
