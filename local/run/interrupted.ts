/** Ctrl-C before the run had anything to resume (while connecting, say): exit 130, no resume hint. */
export class InterruptedError extends Error {
  override readonly name = 'Interrupted';
}
