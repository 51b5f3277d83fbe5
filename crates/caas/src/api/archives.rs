//! Archive endpoints: list, read and download archives (teachers: their
//! classes; students: their own; admins: all), choose what a student's next
//! session starts from, and the operator's view of archive-pending sessions.
//! Anything the caller may not see is 404, never a hint that it exists.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::authn::Caller;
use super::error::{Json, Query};
use super::handlers::{audit, managed_class, ok, visible_session};
use super::AppState;
use crate::archive::browse;
use crate::error::{Error, Result};
use crate::store::archives::{Archive, ArchiveFilter};
use crate::store::users::Role;

type J = axum::Json<Value>;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ArchiveQuery {
    #[serde(default)]
    class_id: Option<String>,
    #[serde(default)]
    student_id: Option<String>,
}

/// The archive if the caller may read it; 404 otherwise.
async fn visible_archive(st: &AppState, who: &Caller, id: &str) -> Result<Archive> {
    let a = st.store().archive(id).await?;
    let allowed = match who.role {
        Role::Admin => true,
        Role::Teacher => st.store().is_teacher_of(&a.class_id, &who.id).await?,
        Role::Student => a.student_id == who.id,
    };
    if allowed {
        Ok(a)
    } else {
        Err(Error::NotFound(format!("archive {id}")))
    }
}

pub async fn list_archives(
    State(st): State<AppState>,
    who: Caller,
    Query(q): Query<ArchiveQuery>,
) -> Result<J> {
    let store = st.store();
    let list = match (who.role, &q.class_id, &q.student_id) {
        // Students: their own, whatever they ask for.
        (Role::Student, c, s) => {
            if s.as_deref().is_some_and(|s| s != who.id) {
                return Err(Error::NotFound("that student's archives".into()));
            }
            let mut l = store.archives(ArchiveFilter::Student(&who.id)).await?;
            if let Some(c) = c {
                l.retain(|a| &a.class_id == c);
            }
            l
        }
        (_, Some(c), s) => {
            managed_class(&st, &who, c).await?;
            match s {
                Some(s) => store.archives(ArchiveFilter::ClassStudent(c, s)).await?,
                None => store.archives(ArchiveFilter::Class(c)).await?,
            }
        }
        (role, None, s) => {
            let mut l = if role == Role::Admin {
                store.archives(ArchiveFilter::All).await?
            } else {
                store.archives(ArchiveFilter::Teacher(&who.id)).await?
            };
            if let Some(s) = s {
                l.retain(|a| &a.student_id == s);
            }
            l
        }
    };
    ok(list)
}

pub async fn get_archive(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    ok(visible_archive(&st, &who, &id).await?)
}

/// The stored object as is (a zstd-compressed tar: `zstd -d | tar -x`),
/// streamed; its sha256 in a header.
pub async fn download_archive(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let a = visible_archive(&st, &who, &id).await?;
    let body = st.manager.objects().get(&a.object_key).await?;
    audit(&st, &who, "archive.download", &id, None).await;
    let name = format!("{}-{}.tar.zst", a.session_id, a.created_at);
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_string()),
            (header::CONTENT_LENGTH, a.size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (
                header::HeaderName::from_static("x-cubby-sha256"),
                a.sha256.clone(),
            ),
        ],
        Body::from_stream(body.map(|r| r.map_err(std::io::Error::other))),
    )
        .into_response())
}

/// The archive's tar stream, for reading on a blocking thread.
async fn tar_of(st: &AppState, a: &Archive) -> Result<browse::StreamRead> {
    let tar = st.manager.objects().get_tar(&a.object_key).await?;
    Ok(browse::StreamRead::new(
        tokio::runtime::Handle::current(),
        tar,
    ))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("reading the archive: {e}")))?
}

/// The archive's file tree (every entry: path, kind, mode, size, mtime).
pub async fn archive_files(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    let a = visible_archive(&st, &who, &id).await?;
    let r = tar_of(&st, &a).await?;
    ok(blocking(move || browse::tree(r)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// As listed by the archive's files, e.g. `workspace/src/a.txt`.
    path: String,
}

/// One regular file of an archive, streamed as an attachment (never
/// rendered in cubby's origin: it is the student's content).
pub async fn archive_file(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> Result<Response> {
    browse::check_path(&q.path)?;
    let a = visible_archive(&st, &who, &id).await?;
    let r = tar_of(&st, &a).await?;
    let p = q.path.clone();
    let size = blocking(move || browse::has_file(r, &p))
        .await?
        .ok_or_else(|| Error::NotFound(format!("file {} in archive {id}", q.path)))?;
    let r = tar_of(&st, &a).await?;
    audit(&st, &who, "archive.read_file", &id, Some(&q.path)).await;
    let base = q.path.rsplit('/').next().unwrap_or("file");
    let name = browse::folder_name(base);
    let p = q.path.clone();
    let body = browse::body_from_blocking(move |w| {
        if browse::copy_file(r, &p, w)? {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "file {p} vanished from the archive"
            )))
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        body,
    )
        .into_response())
}

/// The newest archive of every student who has one in the class, as one
/// zip (`USERNAME/workspace/...`), streamed while it is made.
pub async fn class_zip(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let class = managed_class(&st, &who, &id).await?;
    let names: std::collections::HashMap<String, String> =
        st.store().students(&id).await?.into_iter().collect();
    // Newest per student (the list is oldest first).
    let mut latest: std::collections::BTreeMap<String, Archive> = Default::default();
    for a in st.store().archives(ArchiveFilter::Class(&id)).await? {
        latest.insert(a.student_id.clone(), a);
    }
    let mut items: Vec<(String, String)> = latest
        .into_values()
        .map(|a| {
            let who = names.get(&a.student_id).unwrap_or(&a.student_id);
            (browse::folder_name(who), a.object_key)
        })
        .collect();
    items.sort();
    audit(
        &st,
        &who,
        "archive.class_zip",
        &id,
        Some(&format!("{} archives", items.len())),
    )
    .await;
    let objects = st.manager.objects().clone();
    let rt = tokio::runtime::Handle::current();
    let body = browse::body_from_blocking(move |w| {
        let mut zip = zip::ZipWriter::new_stream(w);
        for (folder, key) in items {
            let tar = rt.block_on(objects.get_tar(&key))?;
            browse::tar_into_zip(&mut zip, &folder, browse::StreamRead::new(rt.clone(), tar))?;
        }
        zip.finish()
            .map_err(|e| Error::Internal(format!("writing the zip: {e}")))?;
        Ok(())
    });
    let name = format!("{}-archives.zip", browse::folder_name(&class.code));
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreReq {
    /// An archive of this class; null for an empty workspace.
    archive_id: Option<String>,
}

/// The class if the caller manages it (404 otherwise) and the student is
/// enrolled in it: who may read or set a student's restore choice.
async fn managed_student(
    st: &AppState,
    who: &Caller,
    class_id: &str,
    student_id: &str,
) -> Result<()> {
    managed_class(st, who, class_id).await?;
    if !st.store().is_enrolled(class_id, student_id).await? {
        return Err(Error::Invalid(format!(
            "student {student_id} is not enrolled in this class"
        )));
    }
    Ok(())
}

/// What the student's next session starts from, as the API shows it:
/// `restore` is `latest` (no choice: their newest archive, if any),
/// `archive` (`archive_id`) or `empty`.
fn restore_view(class_id: &str, student_id: &str, choice: Option<Option<&str>>) -> Value {
    let restore = match choice {
        None => "latest",
        Some(Some(_)) => "archive",
        Some(None) => "empty",
    };
    serde_json::json!({
        "class_id": class_id,
        "student_id": student_id,
        "restore": restore,
        "archive_id": choice.flatten(),
    })
}

pub async fn get_restore(
    State(st): State<AppState>,
    who: Caller,
    Path((class_id, student_id)): Path<(String, String)>,
) -> Result<J> {
    managed_student(&st, &who, &class_id, &student_id).await?;
    let choice = st.store().restore_choice(&class_id, &student_id).await?;
    ok(restore_view(
        &class_id,
        &student_id,
        choice.as_ref().map(Option::as_deref),
    ))
}

pub async fn set_restore(
    State(st): State<AppState>,
    who: Caller,
    Path((class_id, student_id)): Path<(String, String)>,
    Json(req): Json<RestoreReq>,
) -> Result<J> {
    managed_student(&st, &who, &class_id, &student_id).await?;
    if let Some(aid) = &req.archive_id {
        let a = st.store().archive(aid).await?;
        if a.class_id != class_id {
            return Err(Error::NotFound(format!("archive {aid} in this class")));
        }
    }
    st.store()
        .set_restore_choice(&class_id, &student_id, req.archive_id.as_deref(), &who.id)
        .await?;
    audit(
        &st,
        &who,
        "archive.restore_choice",
        &format!("{class_id}/{student_id}"),
        Some(req.archive_id.as_deref().unwrap_or("empty")),
    )
    .await;
    ok(restore_view(
        &class_id,
        &student_id,
        Some(req.archive_id.as_deref()),
    ))
}

pub async fn archive_pending(State(st): State<AppState>, who: Caller) -> Result<J> {
    who.require(&[Role::Admin])?;
    ok(st.store().archive_pending(false).await?)
}

pub async fn retry_archive(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    who.require(&[Role::Admin])?;
    visible_session(&st, &who, &id).await?;
    let s = st.manager.retry_archive(&id).await?;
    audit(&st, &who, "archive.retry", &id, None).await;
    ok(s)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamReq {
    /// Unix seconds: sessions start only in [starts_at, ends_at); at
    /// ends_at all are archived and removed.
    starts_at: i64,
    ends_at: i64,
}

pub async fn set_exam(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
    Json(req): Json<ExamReq>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    if req.ends_at <= req.starts_at {
        return Err(Error::Invalid(format!(
            "ends_at {} must be after starts_at {}",
            req.ends_at, req.starts_at
        )));
    }
    let e = st
        .store()
        .set_exam(&id, req.starts_at, req.ends_at, &who.id)
        .await?;
    audit(
        &st,
        &who,
        "exam.set",
        &id,
        Some(&format!("{}..{}", req.starts_at, req.ends_at)),
    )
    .await;
    ok(e)
}

/// The exam window and, per student, collected / pending / failed and why.
pub async fn get_exam(
    State(st): State<AppState>,
    who: Caller,
    Path(id): Path<String>,
) -> Result<J> {
    managed_class(&st, &who, &id).await?;
    let exam = st
        .store()
        .exam(&id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("exam of class {id}")))?;
    let students = st.manager.collection(&id, exam.starts_at).await?;
    ok(serde_json::json!({
        "exam": exam,
        "students": students,
    }))
}
