/**
 * C handles shared between the wrapper classes of this folder (and only
 * them): a RamFile's pointer is needed by ContentIndex and by copyPages.
 *
 * @module
 */

const ramHandles = new WeakMap<object, Deno.PointerObject>();

export function setRamHandle(owner: object, handle: Deno.PointerObject | undefined): void {
  if (handle) ramHandles.set(owner, handle);
  else ramHandles.delete(owner);
}

export function ramHandle(owner: object, what: string): Deno.PointerObject {
  const handle = ramHandles.get(owner);
  if (!handle) throw new Error(`Cannot ${what}: the guest RAM file is closed`);
  return handle;
}
