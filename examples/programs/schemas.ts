// TypeBox schemas: one source for the route bodies, the event payloads checked by `broadcast`,
// and (through `Static`) the TypeScript types of both.
import { Type, type Static } from 'typebox'

export const StatusSchema = Type.Union([
  Type.Literal('open'),
  Type.Literal('in_progress'),
  Type.Literal('blocked'),
  Type.Literal('done')
])
export type Status = Static<typeof StatusSchema>

const Id = Type.String({ minLength: 1, maxLength: 64 })
const Title = Type.String({ minLength: 1, maxLength: 200, pattern: '\\S' })
/** Milliseconds since the Unix epoch. */
const Millis = Type.Integer({ minimum: 0 })

export const CommentSchema = Type.Object({
  id: Id,
  author: Id,
  body: Type.String({ minLength: 1, maxLength: 5000 }),
  at: Millis
}, { additionalProperties: false })
export type Comment = Static<typeof CommentSchema>

/** What the tracker keeps of an attachment: its metadata; the file itself lives in object storage. */
export const AttachmentSchema = Type.Object({
  id: Id,
  name: Type.String({ minLength: 1, maxLength: 255 }),
  /** Bytes. */
  size: Type.Integer({ minimum: 0, maximum: 100 * 1024 * 1024 }),
  contentType: Type.String({ pattern: '^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$', maxLength: 127 }),
  uploadedBy: Id,
  at: Millis
}, { additionalProperties: false })
export type Attachment = Static<typeof AttachmentSchema>

export const RequestSchema = Type.Object({
  id: Id,
  programId: Id,
  title: Title,
  status: StatusSchema,
  /** A member of the program, or null while nobody owns it. */
  assignee: Type.Union([Id, Type.Null()]),
  comments: Type.Array(CommentSchema),
  attachments: Type.Array(AttachmentSchema),
  /** Grows with every change; clients keep the newest copy of a request. */
  updatedAt: Millis
}, { additionalProperties: false })
export type ProgramRequest = Static<typeof RequestSchema>

// Route bodies
export const NewRequestSchema = Type.Object({
  title: Title,
  assignee: Type.Optional(Type.Union([Id, Type.Null()]))
}, { additionalProperties: false })
export type NewRequest = Static<typeof NewRequestSchema>

export const RequestChangeSchema = Type.Object({
  title: Type.Optional(Title)
}, { additionalProperties: false, minProperties: 1 })
export type RequestChange = Static<typeof RequestChangeSchema>

export const StatusChangeSchema = Type.Object({ status: StatusSchema }, { additionalProperties: false })
export type StatusChange = Static<typeof StatusChangeSchema>

export const AssignSchema = Type.Object({ assignee: Type.Union([Id, Type.Null()]) }, { additionalProperties: false })
export type Assign = Static<typeof AssignSchema>

export const NewCommentSchema = Type.Object({
  body: Type.String({ minLength: 1, maxLength: 5000, pattern: '\\S' })
}, { additionalProperties: false })
export type NewComment = Static<typeof NewCommentSchema>

/** JSON metadata of an uploaded file: the upload itself goes to object storage, not through here. */
export const NewAttachmentSchema = Type.Object({
  name: AttachmentSchema.properties.name,
  size: AttachmentSchema.properties.size,
  contentType: AttachmentSchema.properties.contentType
}, { additionalProperties: false })
export type NewAttachment = Static<typeof NewAttachmentSchema>

const ParamId = Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' })
export const ProgramParamsSchema = Type.Object({ programId: ParamId })
export type ProgramParams = Static<typeof ProgramParamsSchema>
export const RequestParamsSchema = Type.Object({ id: ParamId })
export type RequestParams = Static<typeof RequestParamsSchema>
export const CommentParamsSchema = Type.Object({ id: ParamId, commentId: ParamId })
export type CommentParams = Static<typeof CommentParamsSchema>
export const AttachmentParamsSchema = Type.Object({ id: ParamId, attachmentId: ParamId })
export type AttachmentParams = Static<typeof AttachmentParamsSchema>

// Event payloads, sent to `program:<programId>`
export const RequestCreated = Type.Object({ request: RequestSchema }, { additionalProperties: false })
export const RequestUpdated = Type.Object({ request: RequestSchema }, { additionalProperties: false })
export const RequestStatusChanged = Type.Object({ id: Id, from: StatusSchema, to: StatusSchema }, { additionalProperties: false })
export const RequestAssigned = Type.Object({
  id: Id,
  assignee: Type.Union([Id, Type.Null()]),
  previous: Type.Union([Id, Type.Null()])
}, { additionalProperties: false })
export const CommentAdded = Type.Object({ requestId: Id, comment: CommentSchema }, { additionalProperties: false })
export const CommentDeleted = Type.Object({ requestId: Id, commentId: Id }, { additionalProperties: false })
export const AttachmentUploaded = Type.Object({ requestId: Id, attachment: AttachmentSchema }, { additionalProperties: false })
export const AttachmentDeleted = Type.Object({ requestId: Id, attachmentId: Id }, { additionalProperties: false })

/** The plugin's `events` option: every payload is checked before it is stored or sent. */
export const events = {
  'request:created': RequestCreated,
  'request:updated': RequestUpdated,
  'request:status_changed': RequestStatusChanged,
  'request:assigned': RequestAssigned,
  'comment:added': CommentAdded,
  'comment:deleted': CommentDeleted,
  'attachment:uploaded': AttachmentUploaded,
  'attachment:deleted': AttachmentDeleted
}

// Typed events: `app.broadcast('program:apollo', 'request:status_changed', …)` is checked at compile time.
declare module 'fastify-realtime' {
  interface RealtimeEvents {
    'request:created': Static<typeof RequestCreated>
    'request:updated': Static<typeof RequestUpdated>
    'request:status_changed': Static<typeof RequestStatusChanged>
    'request:assigned': Static<typeof RequestAssigned>
    'comment:added': Static<typeof CommentAdded>
    'comment:deleted': Static<typeof CommentDeleted>
    'attachment:uploaded': Static<typeof AttachmentUploaded>
    'attachment:deleted': Static<typeof AttachmentDeleted>
  }
}
