//! The route table: every HTTP route is added here with its method and full path, then
//! registered with actix one resource per path. The same table lists the routes for the
//! check that the OpenAPI description misses none (`routes::endpoints`).

use actix_web::http::Method;
use actix_web::{web, FromRequest, Handler, Resource, Responder, Route};

struct Entry {
    method: Method,
    path: String,
    route: Route,
    fallback: Option<Fallback>,
}

/// What a resource answers to a method it lacks, for an API with an error shape of its own
/// (`/v1`, OpenAI's); the others get actix's 405.
pub type Fallback = fn() -> Route;

/// Routes being collected, under a path prefix (a scope).
#[derive(Default)]
pub struct Routes {
    prefix: String,
    fallback: Option<Fallback>,
    entries: Vec<Entry>,
}

macro_rules! verb {
    ($name:ident, $method:ident) => {
        pub fn $name<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
        where
            F: Handler<Args>,
            Args: FromRequest + 'static,
            F::Output: Responder + 'static,
        {
            self.add(
                Method::$method,
                path,
                web::route().method(Method::$method).to(handler),
            )
        }
    };
}

impl Routes {
    verb!(get, GET);
    verb!(post, POST);
    verb!(patch, PATCH);
    verb!(delete, DELETE);

    fn add(&mut self, method: Method, path: &str, route: Route) -> &mut Self {
        self.entries.push(Entry {
            method,
            path: format!("{}{path}", self.prefix),
            route,
            fallback: self.fallback,
        });
        self
    }

    /// Routes under `prefix` (`/api/v1`, `/admin`).
    pub fn scope(&mut self, prefix: &str, add: impl FnOnce(&mut Routes)) -> &mut Self {
        self.scope_with(prefix, self.fallback, add)
    }

    /// Routes under `prefix` whose resources answer a method they lack with `fallback`.
    pub fn scope_with(
        &mut self,
        prefix: &str,
        fallback: Option<Fallback>,
        add: impl FnOnce(&mut Routes),
    ) -> &mut Self {
        let mut inner = Routes {
            prefix: format!("{}{prefix}", self.prefix),
            fallback,
            entries: Vec::new(),
        };
        add(&mut inner);
        self.entries.append(&mut inner.entries);
        self
    }

    /// `(method, path)` of every route, in the order added; paths as actix spells them
    /// (`{id}`, `{path:.*}`).
    pub fn endpoints(&self) -> Vec<(Method, String)> {
        self.entries
            .iter()
            .map(|e| (e.method.clone(), e.path.clone()))
            .collect()
    }

    /// One resource per path with all its methods, so a method a path lacks is a 405 and a
    /// second registration of the path cannot shadow the first.
    pub fn register(self, cfg: &mut web::ServiceConfig) {
        let mut resources: Vec<(String, Resource)> = Vec::new();
        for entry in self.entries {
            match resources.iter().position(|(path, _)| *path == entry.path) {
                Some(i) => {
                    let (path, resource) = resources.remove(i);
                    resources.insert(i, (path, resource.route(entry.route)));
                }
                None => {
                    let mut resource = web::resource(entry.path.as_str()).route(entry.route);
                    if let Some(fallback) = entry.fallback {
                        resource = resource.default_service(fallback());
                    }
                    resources.push((entry.path, resource));
                }
            }
        }
        for (_, resource) in resources {
            cfg.service(resource);
        }
    }
}
