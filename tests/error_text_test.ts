/**
 * A peer's ERROR text is shown on one line with its control characters
 * escaped: a sender or target cannot write terminal escapes or forge a
 * log line through it.
 */
import { assertEquals } from "./_assert.ts";
import { decodeText } from "../src/transfer/protocol.ts";

Deno.test("decodeText() escapes control, separator and format characters, keeps the rest", () => {
  const hostile =
    "no\x1b[2J\x1b[31m\r\nreceive: 10.0.0.1: complete, every digest matched\x07\x7f\u0085";
  assertEquals(
    decodeText(new TextEncoder().encode(hostile)),
    "no\\x1b[2J\\x1b[31m\\x0d\\x0areceive: 10.0.0.1: complete, every digest matched\\x07\\x7f\\x85",
  );
  assertEquals(
    decodeText(new TextEncoder().encode("Gang refused: «vm1» ✓")),
    "Gang refused: «vm1» ✓",
  );
  assertEquals(decodeText(Uint8Array.of(0xff, 0x41)), "\ufffdA");
  // Unicode's separators and format characters: a line break, reversed text, hidden characters.
  assertEquals(
    decodeText(new TextEncoder().encode("a\u2028b\u2029c\u202ed\u200be\u2066f\ufeffg")),
    "a\\u2028b\\u2029c\\u202ed\\u200be\\u2066f\\ufeffg",
  );
  // The Arabic letter mark (bidirectional), a soft hyphen, Mongolian and deprecated format
  // characters, interlinear annotation, and tag characters (beyond U+FFFF).
  assertEquals(
    decodeText(new TextEncoder().encode("a\u061cb\xadc\u180ed\u206ae\ufff9f\u{e0041}g🙂")),
    "a\\u061cb\\xadc\\u180ed\\u206ae\\ufff9f\\u{e0041}g🙂",
  );
});
