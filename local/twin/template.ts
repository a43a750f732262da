import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Reading a synthesized cloud assembly (`cdk.out`) the way CloudFormation would deploy it: the
 * stack's template, its resources, and CloudFormation's intrinsic functions (Ref, Fn::GetAtt,
 * Fn::Join, Fn::Sub, Fn::Select) resolved to the values a local deployment gives them.
 */

export const TWIN_REGION = 'us-east-1';
export const TWIN_ACCOUNT = '000000000000';

/** The template is not what the twin can run, or a reference has no local value; says which. */
export class TemplateError extends Error {
  override readonly name = 'TemplateError';
}

export interface CfnResource {
  Type: string;
  Properties?: Record<string, unknown>;
  DependsOn?: string | string[];
}

export interface CfnTemplate {
  Resources: Record<string, CfnResource>;
  Parameters?: Record<string, { Default?: unknown }>;
}

/** The template of `stackName` from the assembly in `outdir` (its manifest names the file). */
export function readStackTemplate(outdir: string, stackName: string): CfnTemplate {
  const manifestFile = join(outdir, 'manifest.json');
  if (!existsSync(manifestFile)) {
    throw new TemplateError(
      `${outdir} holds no cloud assembly (no manifest.json): synthesize first (cdk synth -o ${outdir}).`,
    );
  }
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as {
    artifacts?: Record<
      string,
      { type: string; properties?: { templateFile?: string }; displayName?: string }
    >;
  };
  const artifact = Object.entries(manifest.artifacts ?? {}).find(
    ([id, a]) => a.type === 'aws:cloudformation:stack' && (id === stackName || a.displayName === stackName),
  )?.[1];
  const file = artifact?.properties?.templateFile;
  if (!file) {
    throw new TemplateError(`The cloud assembly in ${outdir} has no stack named ${stackName}.`);
  }
  return JSON.parse(readFileSync(join(outdir, file), 'utf8')) as CfnTemplate;
}

/** The logical ids of the resources of `type`. */
export function resourcesOfType(template: CfnTemplate, type: string): string[] {
  return Object.entries(template.Resources)
    .filter(([, r]) => r.Type === type)
    .map(([id]) => id);
}

export function resource(template: CfnTemplate, logicalId: string): CfnResource {
  const r = template.Resources[logicalId];
  if (!r) throw new TemplateError(`The template has no resource ${logicalId}.`);
  return r;
}

/** Values a local deployment gives to attributes CloudFormation only knows after creating a resource. */
export type AttributeOverrides = Record<string, Record<string, string | number>>;

/** The service part of a local ARN for a resource type, e.g. `AWS::SNS::Topic` -> `sns`. */
function serviceOf(type: string): string {
  return (type.split('::')[1] ?? 'unknown').toLowerCase();
}

/**
 * Resolves intrinsic functions to local values. A resource's Ref and Arn are local names derived
 * from its logical id (a secret's ARN is `arn:aws:secretsmanager:us-east-1:000000000000:secret:<id>`,
 * a function's `arn:aws:lambda:...:function:<id>`); other attributes come from `attributes`
 * (the database's endpoint, say). A reference with no local value fails and names it.
 */
export class LocalResolver {
  constructor(
    private readonly template: CfnTemplate,
    private readonly stackName: string,
    private readonly attributes: AttributeOverrides = {},
  ) {}

  arnOf(logicalId: string): string {
    const r = resource(this.template, logicalId);
    switch (r.Type) {
      case 'AWS::Lambda::Function':
        return `arn:aws:lambda:${TWIN_REGION}:${TWIN_ACCOUNT}:function:${logicalId}`;
      case 'AWS::Lambda::Version':
        return `${this.arnOf(this.functionOfVersion(logicalId))}:1`;
      case 'AWS::SecretsManager::Secret':
        return `arn:aws:secretsmanager:${TWIN_REGION}:${TWIN_ACCOUNT}:secret:${logicalId}`;
      case 'AWS::SecretsManager::SecretTargetAttachment':
        // Its Ref is the ARN of the secret it completes.
        return String(this.resolve(r.Properties?.SecretId, `${logicalId}.SecretId`));
      case 'AWS::StepFunctions::StateMachine':
        return `arn:aws:states:${TWIN_REGION}:${TWIN_ACCOUNT}:stateMachine:${logicalId}`;
      default:
        return `arn:aws:${serviceOf(r.Type)}:${TWIN_REGION}:${TWIN_ACCOUNT}:${logicalId}`;
    }
  }

  /** The function logical id an AWS::Lambda::Version belongs to. */
  functionOfVersion(versionId: string): string {
    const name = resource(this.template, versionId).Properties?.FunctionName as { Ref?: string } | undefined;
    if (!name?.Ref) throw new TemplateError(`The version ${versionId} names no function by Ref.`);
    return name.Ref;
  }

  /** The logical id of the function an ARN value (before resolution) refers to, if it refers to one. */
  functionOf(value: unknown): string | null {
    const v = value as { Ref?: string; 'Fn::GetAtt'?: [string, string] } | undefined;
    const id = v?.Ref ?? v?.['Fn::GetAtt']?.[0];
    if (!id) return null;
    const r = this.template.Resources[id];
    if (r?.Type === 'AWS::Lambda::Function') return id;
    if (r?.Type === 'AWS::Lambda::Version') return this.functionOfVersion(id);
    return null;
  }

  private ref(name: string, where: string): unknown {
    switch (name) {
      case 'AWS::Partition':
        return 'aws';
      case 'AWS::Region':
        return TWIN_REGION;
      case 'AWS::AccountId':
        return TWIN_ACCOUNT;
      case 'AWS::URLSuffix':
        return 'amazonaws.com';
      case 'AWS::StackName':
        return this.stackName;
      case 'AWS::StackId':
        return `arn:aws:cloudformation:${TWIN_REGION}:${TWIN_ACCOUNT}:stack/${this.stackName}/twin`;
    }
    const param = this.template.Parameters?.[name];
    if (param) {
      if (param.Default === undefined)
        throw new TemplateError(`${where}: the parameter ${name} has no default.`);
      return param.Default;
    }
    const r = resource(this.template, name);
    if (r.Type === 'AWS::Lambda::Function' || r.Type === 'AWS::Logs::LogGroup') {
      return r.Type === 'AWS::Logs::LogGroup' ? `/twin/${name}` : name;
    }
    return this.arnOf(name);
  }

  private getAtt(id: string, attribute: string, where: string): unknown {
    const given = this.attributes[id]?.[attribute];
    if (given !== undefined) return given;
    if (attribute === 'Arn') return this.arnOf(id);
    const type = resource(this.template, id).Type;
    throw new TemplateError(
      `${where}: Fn::GetAtt ${id}.${attribute} (${type}) has no local value: the twin resolves only ARNs ` +
        `and ${Object.entries(this.attributes)
          .flatMap(([r, a]) => Object.keys(a).map((k) => `${r}.${k}`))
          .join(', ')}. Add one in local/twin/ for the new reference.`,
    );
  }

  resolve(value: unknown, where = 'template'): unknown {
    if (Array.isArray(value)) return value.map((v, i) => this.resolve(v, `${where}[${i}]`));
    if (value === null || typeof value !== 'object') return value;
    const entries = Object.entries(value as Record<string, unknown>);
    const [key, arg] = entries[0] ?? [];
    if (entries.length === 1 && key !== undefined && (key === 'Ref' || key.startsWith('Fn::'))) {
      switch (key) {
        case 'Ref':
          return this.ref(String(arg), where);
        case 'Fn::GetAtt': {
          const [id, attribute] = (typeof arg === 'string' ? splitAttribute(arg) : arg) as [string, string];
          return this.getAtt(id, attribute, where);
        }
        case 'Fn::Join': {
          const [sep, parts] = arg as [string, unknown[]];
          return (this.resolve(parts, where) as unknown[]).map(String).join(sep);
        }
        case 'Fn::Select': {
          const [index, list] = arg as [unknown, unknown];
          return (this.resolve(list, where) as unknown[])[Number(this.resolve(index, where))];
        }
        case 'Fn::Sub': {
          const [text, vars] = (typeof arg === 'string' ? [arg, {}] : arg) as [
            string,
            Record<string, unknown>,
          ];
          return text.replace(/\$\{([^}!][^}]*)\}/g, (_, name: string) => {
            if (name in vars) return String(this.resolve(vars[name], where));
            const [id, attribute] = splitAttribute(name);
            return String(attribute ? this.getAtt(id, attribute, where) : this.ref(id, where));
          });
        }
        default:
          throw new TemplateError(`${where}: the twin does not resolve ${key}.`);
      }
    }
    return Object.fromEntries(entries.map(([k, v]) => [k, this.resolve(v, `${where}.${k}`)]));
  }
}

/** `Db.Endpoint.Address` -> `['Db', 'Endpoint.Address']`: attribute names may hold dots, logical ids never. */
function splitAttribute(text: string): [string, string | undefined] {
  const dot = text.indexOf('.');
  return dot < 0 ? [text, undefined] : [text.slice(0, dot), text.slice(dot + 1)];
}

/** One AWS::Lambda::Function as the twin needs it, references unresolved. */
export interface TemplateFunction {
  logicalId: string;
  description: string;
  handler: string;
  runtime: string;
  timeoutSeconds: number;
  memoryMb: number;
  /** The asset folder holding its bundle (`asset.<hash>` beside the template). */
  assetDir: string;
  environment: Record<string, unknown>;
  logLevel: string | null;
  logFormat: string | null;
}

export function templateFunction(template: CfnTemplate, outdir: string, logicalId: string): TemplateFunction {
  const r = resource(template, logicalId);
  if (r.Type !== 'AWS::Lambda::Function')
    throw new TemplateError(`${logicalId} is a ${r.Type}, not a function.`);
  const p = r.Properties ?? {};
  const key = (p.Code as { S3Key?: unknown } | undefined)?.S3Key;
  if (typeof key !== 'string' || !key.endsWith('.zip')) {
    throw new TemplateError(
      `The function ${logicalId} has no asset code (Code.S3Key): the twin runs bundled assets only.`,
    );
  }
  const assetDir = join(outdir, `asset.${key.replace(/\.zip$/, '')}`);
  if (!existsSync(assetDir))
    throw new TemplateError(`The bundle of ${logicalId} is missing from ${assetDir}.`);
  const logging = (p.LoggingConfig ?? {}) as { ApplicationLogLevel?: string; LogFormat?: string };
  return {
    logicalId,
    description: String(p.Description ?? ''),
    handler: String(p.Handler),
    runtime: String(p.Runtime),
    timeoutSeconds: Number(p.Timeout ?? 3),
    memoryMb: Number(p.MemorySize ?? 128),
    assetDir,
    environment: (p.Environment as { Variables?: Record<string, unknown> } | undefined)?.Variables ?? {},
    logLevel: logging.ApplicationLogLevel ?? null,
    logFormat: logging.LogFormat ?? null,
  };
}

/** The state machine's DefinitionString (or Definition) resolved to ASL. */
export function stateMachineDefinition(
  template: CfnTemplate,
  resolver: LocalResolver,
): { logicalId: string; definition: Record<string, unknown>; raw: unknown } {
  const ids = resourcesOfType(template, 'AWS::StepFunctions::StateMachine');
  if (ids.length !== 1) {
    throw new TemplateError(
      `The template holds ${ids.length} state machines; the twin runs a stack with exactly one.`,
    );
  }
  const id = ids[0] as string;
  const p = resource(template, id).Properties ?? {};
  const raw = p.DefinitionString ?? p.Definition;
  const resolved = resolver.resolve(raw, `${id}.DefinitionString`);
  const definition = (typeof resolved === 'string' ? JSON.parse(resolved) : resolved) as Record<
    string,
    unknown
  >;
  return { logicalId: id, definition, raw };
}
