/**
 * Lines of a child process's output, as they come. Shared by the QEMU
 * layer (image builds) and the lab (its runners).
 *
 * @module
 */

/** Calls `each` with every line of a byte stream, until it ends. */
export async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  each: (line: string) => void,
): Promise<void> {
  let rest = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (rest + text).split("\n");
    rest = lines.pop()!;
    for (const line of lines) each(line);
  }
  if (rest !== "") each(rest);
}
