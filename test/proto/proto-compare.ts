// Compares a project .proto against an upstream .proto: every message, field, enum value and service method
// the project declares must exist upstream with the same number and type. Declarations upstream lacks
// entirely are either errors or notes (an older upstream copy than the protocol version we speak).
import protobuf from "protobufjs";

const { Enum, MapField, Namespace, Root, Service, Type, parse } = protobuf;
type ReflectionObject = protobuf.ReflectionObject;

export interface CompareOptions {
  /** What a declaration absent upstream is: "error", or a "note" (checked by name only). */
  missing: "error" | "note";
  /** Appended to notes about missing declarations, e.g. "not in upstream v0.8". */
  missingLabel?: string;
}

export interface CompareResult {
  errors: string[];
  notes: string[];
  /** How many messages/enums/services, fields/values/methods were compared against an upstream counterpart. */
  checked: { types: number; members: number };
}

/**
 * Parses proto source with protobufjs after removing what it cannot or need not read: imports (upstream
 * pulls in gogoproto and friends) and custom options like `[(gogoproto.nullable) = false]` or
 * `option (gogoproto.x) = true;`. Options never change field numbers or types, so nothing compared is lost.
 */
export function parseProto(source: string): protobuf.Root {
  const cleaned = source
    .replace(/^\s*import\s+(weak\s+|public\s+)?"[^"]*"\s*;/gm, "")
    .replace(/^\s*option\s+\([^)]*\)[^;]*;/gm, "")
    .replace(/\[\s*\([^\]]*\]/g, "");
  const root = new Root();
  parse(cleaned, root, { keepCase: true });
  return root;
}

interface FieldShape {
  id: number;
  repeated: boolean;
  keyType: string | null;
  type: string;
}

/** A type reference as a comparable string: scalars as-is, messages and enums by kind and full name. */
function typeName(owner: ReflectionObject, name: string): string {
  if (SCALARS.has(name)) return name;
  const parent = owner.parent as protobuf.Namespace | null;
  const found = parent?.lookup(name, [Type, Enum]) ?? null;
  // Unresolvable (an import we stripped): compare the name as written, without a leading dot.
  if (!found) return `unresolved ${name.replace(/^\./, "")}`;
  return `${found instanceof Enum ? "enum" : "message"} ${found.fullName.replace(/^\./, "")}`;
}

function shapeOf(field: protobuf.Field): FieldShape {
  return {
    id: field.id,
    repeated: field.repeated,
    keyType: field instanceof MapField ? field.keyType : null,
    type: typeName(field, field.type),
  };
}

function describe(s: FieldShape): string {
  const type =
    s.keyType !== null ? `map<${s.keyType}, ${s.type}>` : `${s.repeated ? "repeated " : ""}${s.type}`;
  return `${type} = ${s.id}`;
}

function* walk(ns: protobuf.NamespaceBase): Generator<ReflectionObject> {
  for (const child of ns.nestedArray) {
    yield child;
    if (child instanceof Namespace || child instanceof Type || child instanceof Service) {
      yield* walk(child as protobuf.NamespaceBase);
    }
  }
}

export function compareProtos(
  projectSource: string,
  upstreamSource: string,
  options: CompareOptions,
): CompareResult {
  const project = parseProto(projectSource);
  const upstream = parseProto(upstreamSource);
  const result: CompareResult = { errors: [], notes: [], checked: { types: 0, members: 0 } };
  const missing = (what: string) => {
    if (options.missing === "error") result.errors.push(`${what} does not exist upstream`);
    else result.notes.push(`${what}: ${options.missingLabel ?? "not upstream"} — checked by name only`);
  };

  for (const obj of walk(project)) {
    const name = obj.fullName.replace(/^\./, "");
    if (obj instanceof Type) {
      const up = upstream.lookup(name);
      if (!(up instanceof Type)) {
        if (up) result.errors.push(`message ${name} is a ${up.constructor.name} upstream, not a message`);
        else missing(`message ${name}`);
        continue;
      }
      result.checked.types++;
      compareFields(name, obj, up, result, missing);
    } else if (obj instanceof Enum) {
      const up = upstream.lookup(name);
      if (!(up instanceof Enum)) {
        if (up) result.errors.push(`enum ${name} is a ${up.constructor.name} upstream, not an enum`);
        else missing(`enum ${name}`);
        continue;
      }
      result.checked.types++;
      for (const [value, num] of Object.entries(obj.values)) {
        const upNum = up.values[value];
        if (upNum === undefined) {
          const clash = Object.entries(up.values).find(([, n]) => n === num);
          if (clash)
            result.errors.push(`enum ${name}: ${value} = ${num}, but upstream's ${num} is ${clash[0]}`);
          else missing(`enum value ${name}.${value}`);
        } else {
          result.checked.members++;
          if (upNum !== num)
            result.errors.push(`enum ${name}: ${value} = ${num}, upstream ${value} = ${upNum}`);
        }
      }
    } else if (obj instanceof Service) {
      const up = upstream.lookup(name);
      if (!(up instanceof Service)) {
        missing(`service ${name}`);
        continue;
      }
      result.checked.types++;
      for (const method of obj.methodsArray) {
        const upMethod = up.methods[method.name];
        if (!upMethod) {
          missing(`rpc ${name}.${method.name}`);
          continue;
        }
        result.checked.members++;
        const mine = signature(method);
        const theirs = signature(upMethod);
        if (mine !== theirs) result.errors.push(`rpc ${name}.${method.name}: ${mine}, upstream ${theirs}`);
      }
    }
  }
  return result;
}

function compareFields(
  name: string,
  mine: protobuf.Type,
  up: protobuf.Type,
  result: CompareResult,
  missing: (what: string) => void,
): void {
  for (const field of mine.fieldsArray) {
    const upField = up.fields[field.name];
    const shape = shapeOf(field);
    if (!upField) {
      const clash = up.fieldsArray.find((f) => f.id === field.id);
      if (clash)
        result.errors.push(
          `${name}.${field.name} = ${field.id}, but upstream's ${field.id} is ${clash.name}`,
        );
      else missing(`field ${name}.${field.name} (${describe(shape)})`);
      continue;
    }
    result.checked.members++;
    const upShape = shapeOf(upField);
    if (describe(shape) !== describe(upShape)) {
      result.errors.push(`${name}.${field.name}: project ${describe(shape)}, upstream ${describe(upShape)}`);
    }
  }
}

function signature(m: protobuf.Method): string {
  const req = `${m.requestStream ? "stream " : ""}${typeName(m, m.requestType)}`;
  const res = `${m.responseStream ? "stream " : ""}${typeName(m, m.responseType)}`;
  return `(${req}) returns (${res})`;
}

const SCALARS = new Set([
  "double",
  "float",
  "int32",
  "int64",
  "uint32",
  "uint64",
  "sint32",
  "sint64",
  "fixed32",
  "fixed64",
  "sfixed32",
  "sfixed64",
  "bool",
  "string",
  "bytes",
]);
