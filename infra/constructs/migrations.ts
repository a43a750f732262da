import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Duration } from 'aws-cdk-lib';
import * as triggers from 'aws-cdk-lib/triggers';
import { Construct, type IConstruct } from 'constructs';
import { ConfigError } from '#shared/errors.ts';
import type { IngestFunction } from './ingest-function.ts';

/**
 * SHA-256 over the relative paths and bytes of every file under `dir`, in sorted order: it changes
 * exactly when a migration is added, removed or edited.
 */
export function hashDirectory(dir: string): string {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ConfigError(
      `Migrations folder ${dir} does not exist: generate the drizzle migrations (npx drizzle-kit generate) or pass the migrationsDir prop.`,
    );
  }
  const files: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) files.push(path);
    }
  };
  walk(dir);
  const hash = createHash('sha256');
  for (const file of files.sort()) {
    hash.update(relative(dir, file).split('\\').join('/'));
    hash.update('\0');
    hash.update(readFileSync(file));
    hash.update('\0');
  }
  return hash.digest('hex');
}

/** Props of {@link Migrations}. */
export interface MigrationsProps {
  /** The migration function (its bundle holds the migrations folder). */
  readonly handler: IngestFunction;
  /** Hash of the migrations folder, see {@link hashDirectory}. */
  readonly migrationsHash: string;
  /** Constructs that must exist before migrating (the database). @default [] */
  readonly executeAfter?: IConstruct[];
  /** Constructs that may only be created after migrating (the state machine). @default [] */
  readonly executeBefore?: IConstruct[];
  /** @default Duration.minutes(5) */
  readonly timeout?: Duration;
}

/**
 * Runs the migration function during every deployment in which it changed. The migrations hash is
 * part of the function's environment, so a new or edited migration publishes a new function
 * version, and the trigger re-runs whenever the version changes (`executeOnHandlerChange`).
 */
export class Migrations extends Construct {
  readonly trigger: triggers.Trigger;

  constructor(scope: Construct, id: string, props: MigrationsProps) {
    super(scope, id);
    const fn = props.handler.function;
    fn.addEnvironment('MIGRATIONS_HASH', props.migrationsHash);
    this.trigger = new triggers.Trigger(this, 'Trigger', {
      handler: fn,
      executeOnHandlerChange: true,
      executeAfter: props.executeAfter ?? [],
      executeBefore: props.executeBefore ?? [],
      timeout: props.timeout ?? Duration.minutes(5),
      invocationType: triggers.InvocationType.REQUEST_RESPONSE,
    });
  }
}
