// TypeBox schemas: one source for the route bodies, the event payloads checked by `broadcast`,
// and (through `Static`) the TypeScript types of both.
import { Type, type Static } from 'typebox'

const Id = Type.String({ minLength: 1, maxLength: 64 })
/** Milliseconds since the Unix epoch. */
const Millis = Type.Integer({ minimum: 0 })

export const SeveritySchema = Type.Union([Type.Literal('sev1'), Type.Literal('sev2'), Type.Literal('sev3')])
export type Severity = Static<typeof SeveritySchema>

export const IncidentStatusSchema = Type.Union([
  Type.Literal('open'),
  Type.Literal('acknowledged'),
  Type.Literal('resolved')
])
export type IncidentStatus = Static<typeof IncidentStatusSchema>

const Text = Type.String({ minLength: 1, maxLength: 2000, pattern: '\\S' })

export const NoteSchema = Type.Object({
  id: Id,
  author: Id,
  text: Text,
  at: Millis
}, { additionalProperties: false })
export type Note = Static<typeof NoteSchema>

export const IncidentSchema = Type.Object({
  id: Id,
  /** The team that owns it; `incident:reassigned` moves it. */
  teamId: Id,
  title: Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' }),
  severity: SeveritySchema,
  status: IncidentStatusSchema,
  acknowledgedBy: Type.Union([Id, Type.Null()]),
  resolvedBy: Type.Union([Id, Type.Null()]),
  notes: Type.Array(NoteSchema),
  createdAt: Millis,
  updatedAt: Millis,
  /** Grows by one with every change: clients keep the copy with the highest version. */
  version: Type.Integer({ minimum: 1 })
}, { additionalProperties: false })
export type Incident = Static<typeof IncidentSchema>

// Route bodies and parameters
export const NewIncidentSchema = Type.Object({
  title: IncidentSchema.properties.title,
  severity: SeveritySchema
}, { additionalProperties: false })
export type NewIncident = Static<typeof NewIncidentSchema>

/** An edit: a new title, a new severity, or both. */
export const IncidentEditSchema = Type.Object({
  title: Type.Optional(IncidentSchema.properties.title),
  severity: Type.Optional(SeveritySchema)
}, { additionalProperties: false, minProperties: 1 })
export type IncidentEdit = Static<typeof IncidentEditSchema>

export const ReassignSchema = Type.Object({ teamId: Id }, { additionalProperties: false })
export type Reassign = Static<typeof ReassignSchema>

export const NewNoteSchema = Type.Object({ text: Text }, { additionalProperties: false })
export type NewNote = Static<typeof NewNoteSchema>

const ParamId = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' })
export const TeamParamsSchema = Type.Object({ teamId: ParamId })
export type TeamParams = Static<typeof TeamParamsSchema>
export const IncidentParamsSchema = Type.Object({ id: ParamId })
export type IncidentParams = Static<typeof IncidentParamsSchema>
export const MemberParamsSchema = Type.Object({ teamId: ParamId, userId: ParamId })
export type MemberParams = Static<typeof MemberParamsSchema>

// Event payloads, each sent to `team:<teamId>` and to `incidents:all`
export const IncidentCreated = Type.Object({ incident: IncidentSchema }, { additionalProperties: false })
export const IncidentAcknowledged = Type.Object({ incident: IncidentSchema }, { additionalProperties: false })
export const IncidentResolved = Type.Object({ incident: IncidentSchema }, { additionalProperties: false })
/** Its title or severity was edited. */
export const IncidentUpdated = Type.Object({ incident: IncidentSchema }, { additionalProperties: false })
/** Sent to both teams: the one that loses the incident and the one that gets it. */
export const IncidentReassigned = Type.Object({ incident: IncidentSchema, from: Id, to: Id }, { additionalProperties: false })
export const IncidentNoteAdded = Type.Object({
  incidentId: Id,
  teamId: Id,
  note: NoteSchema,
  /** The incident's version with this note. */
  version: Type.Integer({ minimum: 1 })
}, { additionalProperties: false })

/** The plugin's `events` option: every payload is checked before it is stored or sent. */
export const events = {
  'incident:created': IncidentCreated,
  'incident:acknowledged': IncidentAcknowledged,
  'incident:resolved': IncidentResolved,
  'incident:updated': IncidentUpdated,
  'incident:reassigned': IncidentReassigned,
  'incident:note_added': IncidentNoteAdded
}

// Typed events: `app.broadcast('team:payments', 'incident:created', …)` is checked at compile time.
declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'incident:created': Static<typeof IncidentCreated>
    'incident:acknowledged': Static<typeof IncidentAcknowledged>
    'incident:resolved': Static<typeof IncidentResolved>
    'incident:updated': Static<typeof IncidentUpdated>
    'incident:reassigned': Static<typeof IncidentReassigned>
    'incident:note_added': Static<typeof IncidentNoteAdded>
  }
}
