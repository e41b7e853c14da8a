//! Cluster mode as this instance sees it: the NATS connection, the instances, and which
//! instance made each subscriber's last delivery.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiError, ErrorBody, HttpError};
use crate::cluster::ClusterView;
use crate::server::AppState;

/// The cluster: connection state, instances and deliverers. 404 when this hub is not
/// an instance of one (it was started without `--cluster`).
#[utoipa::path(
    get,
    path = "/api/v1/cluster",
    operation_id = "getCluster",
    tag = "cluster",
    responses(
        (status = OK, description = "The cluster", body = ClusterView),
        (status = NOT_FOUND, description = "Not in cluster mode", body = ErrorBody),
    )
)]
pub(super) async fn get(State(state): State<AppState>) -> Result<Json<ClusterView>, ApiError> {
    let cluster = state.cluster.as_ref().ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "this hub is not in a cluster; start it with --cluster nats://HOST:PORT",
        )
    })?;
    Ok(Json(cluster.view()))
}
