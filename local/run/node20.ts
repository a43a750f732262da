// aws-local-stepfunctions 3 uses Promise.withResolvers (Node >= 22); Node 20, which this project
// supports, lacks it. Imported for its effect by whatever runs the interpreter.
if (!('withResolvers' in Promise)) {
  Object.assign(Promise, {
    withResolvers<T>() {
      let resolve!: (v: T) => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<T>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    },
  });
}
