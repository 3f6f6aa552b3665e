//! What an NRI plugin implements, as containerd's Go stub shapes it: one handler per event,
//! each a no-op unless the plugin defines it, and the events the plugin subscribes to derived
//! from the handlers it defines ([`nri_plugin!`](crate::nri_plugin)). Handlers are
//! notifications: they run on the runtime's request path, must return quickly, never block on
//! I/O and cannot fail (an error would fail the pod). Container adjustments are not offered.

use super::proto::{Container, Event, PodSandbox};

pub trait Plugin: Send + Sync + 'static {
    /// The events this plugin handles; [`nri_plugin!`](crate::nri_plugin) writes it from the
    /// handlers the plugin defines.
    fn events(&self) -> EventMask;
    /// Every pod and container the runtime knows, once per connection (after reassembly of
    /// split messages), before any event.
    fn synchronize(&self, _pods: Vec<PodSandbox>, _containers: Vec<Container>) {}
    fn run_pod_sandbox(&self, _pod: PodSandbox) {}
    fn stop_pod_sandbox(&self, _pod: PodSandbox) {}
    fn remove_pod_sandbox(&self, _pod: PodSandbox) {}
    fn create_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn post_create_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn start_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn post_start_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn update_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn post_update_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn stop_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    fn remove_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
    /// The runtime is shutting down.
    fn shutdown(&self) {}
    /// The connection to the runtime is gone (the runtime synchronizes again on reconnect).
    fn disconnected(&self) {}
}

/// The events a plugin subscribes to, as `ConfigureResponse.events` carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventMask(pub i32);

impl EventMask {
    /// The events whose handlers are among `handlers` (method names; others, such as
    /// `synchronize`, subscribe to nothing).
    pub fn handled_by(handlers: &[&str]) -> EventMask {
        EventMask(
            Event::ALL
                .iter()
                .filter(|e| handlers.contains(&e.name()))
                .fold(0, |mask, e| mask | e.mask()),
        )
    }

    pub fn contains(self, event: Event) -> bool {
        event != Event::Unknown && self.0 & event.mask() != 0
    }
}

/// Hands a pod event to its handler.
pub(super) fn deliver_pod(plugin: &dyn Plugin, event: Event, pod: PodSandbox) {
    match event {
        Event::RunPodSandbox => plugin.run_pod_sandbox(pod),
        Event::StopPodSandbox => plugin.stop_pod_sandbox(pod),
        Event::RemovePodSandbox => plugin.remove_pod_sandbox(pod),
        _ => {}
    }
}

/// Hands a container event to its handler.
pub(super) fn deliver_container(
    plugin: &dyn Plugin,
    event: Event,
    pod: Option<PodSandbox>,
    container: Container,
) {
    match event {
        Event::CreateContainer => plugin.create_container(pod, container),
        Event::PostCreateContainer => plugin.post_create_container(pod, container),
        Event::StartContainer => plugin.start_container(pod, container),
        Event::PostStartContainer => plugin.post_start_container(pod, container),
        Event::UpdateContainer => plugin.update_container(pod, container),
        Event::PostUpdateContainer => plugin.post_update_container(pod, container),
        Event::StopContainer => plugin.stop_container(pod, container),
        Event::RemoveContainer => plugin.remove_container(pod, container),
        _ => {}
    }
}

/// Implements [`Plugin`] for a type from the handlers written in the block; the plugin
/// subscribes to exactly the events it has handlers for.
///
/// ```ignore
/// nri_plugin! {
///     impl Plugin for Watcher {
///         fn start_container(&self, pod: Option<PodSandbox>, container: Container) { ... }
///     }
/// }
/// ```
#[macro_export]
macro_rules! nri_plugin {
    (impl Plugin for $plugin:ty { $($(#[$meta:meta])* fn $name:ident $args:tt $body:block)* }) => {
        impl $crate::nri::Plugin for $plugin {
            fn events(&self) -> $crate::nri::EventMask {
                $crate::nri::EventMask::handled_by(&[$(stringify!($name)),*])
            }
            $($(#[$meta])* fn $name $args $body)*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    struct StartsOnly;

    crate::nri_plugin! {
        impl Plugin for StartsOnly {
            fn synchronize(&self, _pods: Vec<PodSandbox>, _containers: Vec<Container>) {}
            fn start_container(&self, _pod: Option<PodSandbox>, _container: Container) {}
        }
    }

    #[test]
    fn a_plugin_subscribes_to_exactly_the_events_it_handles() {
        let mask = StartsOnly.events();
        assert_eq!(mask, EventMask(1 << 5), "START_CONTAINER only");
        assert!(mask.contains(Event::StartContainer));
        assert!(!mask.contains(Event::RemoveContainer));
        assert!(!mask.contains(Event::Unknown));
    }
}
