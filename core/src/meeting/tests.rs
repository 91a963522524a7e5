use super::*;
use crate::model::MeetingSettings;

const T0: i64 = 1_000_000;

struct World {
    m: LiveMeeting,
    host: Caller,
}

fn caller(name: &str, role: Option<Role>) -> Caller {
    Caller { user_id: Uuid::new_v4(), display_name: name.to_owned(), invited_role: role }
}

fn world(settings: MeetingSettings) -> World {
    let host = caller("Host", Some(Role::Host));
    let cfg = MeetingConfig { meeting_id: Uuid::new_v4(), host: host.user_id, settings };
    let mut w = World { m: LiveMeeting::new(cfg, T0), host };
    let h = w.host.clone();
    assert!(matches!(w.join(&h), Ok(Answer::Entered(_))));
    w
}

fn open_settings() -> MeetingSettings {
    MeetingSettings { waiting_room: false, ..MeetingSettings::default() }
}

impl World {
    fn req(&mut self, who: &Caller, r: Request) -> Outcome {
        self.m.handle(T0 + 1000, who, &r)
    }
    fn join(&mut self, who: &Caller) -> Result<Answer, (ErrorCode, String)> {
        self.req(who, Request::Join { meeting_id: self.m.meeting_id(), password: None, display_name: None })
            .reply
            .unwrap()
    }
    fn joined(&mut self, name: &str, role: Option<Role>) -> Caller {
        let c = caller(name, role);
        assert!(matches!(self.join(&c), Ok(Answer::Entered(_))), "{name} joins directly");
        c
    }
    fn code(&mut self, who: &Caller, r: Request) -> ErrorCode {
        self.req(who, r).reply.unwrap().unwrap_err().0
    }
    fn ok(&mut self, who: &Caller, r: Request) -> Vec<Effect> {
        let o = self.req(who, r);
        assert!(o.reply.as_ref().unwrap().is_ok(), "{:?}", o.reply);
        o.effects
    }
}

fn events(fx: &[Effect]) -> Vec<&Event> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send { event, .. } | Effect::Broadcast { event, .. } => Some(event),
            _ => None,
        })
        .collect()
}

#[test]
fn host_joins_directly_and_others_wait_then_get_admitted_in_order() {
    let mut w = world(MeetingSettings::default());
    let (a, b) = (caller("Alice", Some(Role::Attendee)), caller("Bob", None));
    assert_eq!(w.join(&a), Ok(Answer::Reply(ReplyData::Waiting { meeting_id: w.m.meeting_id(), position: 1 })));
    let o =
        w.req(&b, Request::Join { meeting_id: w.m.meeting_id(), password: None, display_name: Some("Bobby".into()) });
    assert_eq!(o.reply.unwrap(), Ok(Answer::Reply(ReplyData::Waiting { meeting_id: w.m.meeting_id(), position: 2 })));
    assert!(o.effects.iter().any(|e| matches!(
        e,
        Effect::Broadcast { scope: Scope::Moderators, event: Event::WaitingRoomUser { position: 2, .. } }
    )));
    assert_eq!(
        w.join(&a),
        Ok(Answer::Reply(ReplyData::Waiting { meeting_id: w.m.meeting_id(), position: 1 })),
        "joining again keeps the place"
    );

    // Waiting users can do nothing but leave or heartbeat.
    assert_eq!(w.code(&a, Request::RaiseHand), ErrorCode::NotInMeeting);
    // Only moderators admit.
    assert_eq!(w.code(&a, Request::AdmitAll), ErrorCode::NotInMeeting);
    let h = w.host.clone();
    let fx = w.ok(&h, Request::Admit { user_id: b.user_id });
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Send { to, event: Event::Admitted { meeting: Some(_), .. } } if *to == b.user_id)
    ));
    assert!(fx.contains(&Effect::WaitingRoomChanged(vec![WaitingView {
        user_id: a.user_id,
        display_name: "Alice".into(),
        since: T0 + 1000
    }])));
    assert_eq!(w.m.participant(b.user_id).unwrap().display_name, "Bobby");
    assert_eq!(w.code(&h, Request::Admit { user_id: b.user_id }), ErrorCode::UserNotFound);
    w.ok(&h, Request::AdmitAll);
    assert_eq!(w.m.participant_count(), 3);
    assert!(!w.m.is_waiting(a.user_id));
    assert_eq!(w.code(&b, Request::Admit { user_id: a.user_id }), ErrorCode::Forbidden);
}

#[test]
fn co_hosts_skip_the_waiting_room_and_deny_detaches() {
    let mut w = world(MeetingSettings::default());
    let co = caller("Co", Some(Role::CoHost));
    assert!(matches!(w.join(&co), Ok(Answer::Entered(_))));
    let x = caller("X", None);
    w.join(&x).unwrap();
    let fx = w.ok(&co, Request::Deny { user_id: x.user_id });
    assert!(fx.contains(&Effect::Detach { user_id: x.user_id, reason: LeaveReason::Denied }));
    assert!(events(&fx).contains(&&Event::Denied { user_id: x.user_id }));
    assert!(!w.m.is_waiting(x.user_id));
}

#[test]
fn lock_keeps_newcomers_out_but_not_moderators() {
    let mut w = world(open_settings());
    let h = w.host.clone();
    w.ok(&h, Request::Lock { locked: true });
    let a = caller("A", None);
    assert_eq!(w.join(&a).unwrap_err().0, ErrorCode::MeetingLocked);
    let co = caller("Co", Some(Role::CoHost));
    assert!(w.join(&co).is_ok());
    w.ok(&h, Request::Lock { locked: false });
    assert!(w.join(&a).is_ok());
}

#[test]
fn mute_on_entry_spares_moderators_and_nobody_is_forced_unmuted() {
    let mut w = world(MeetingSettings {
        waiting_room: false,
        mute_on_entry: true,
        video_on_entry: false,
        ..MeetingSettings::default()
    });
    assert!(!w.m.participant(w.host.user_id).unwrap().audio_muted);
    let a = w.joined("A", None);
    let p = w.m.participant(a.user_id).unwrap();
    assert!(p.audio_muted && !p.video_on);
    let fx = w.ok(&a, Request::Mute { muted: false });
    assert!(events(&fx).contains(&&Event::Muted { user_id: a.user_id, muted: false, by: None }));

    let h = w.host.clone();
    let fx = w.ok(&h, Request::MuteParticipant { user_id: a.user_id });
    assert!(events(&fx).contains(&&Event::Muted { user_id: a.user_id, muted: true, by: Some(h.user_id) }));
    // There is no request to unmute someone else; asking is all a moderator can do.
    let fx = w.ok(&h, Request::AskUnmute { user_id: a.user_id });
    assert_eq!(fx, vec![Effect::Send { to: a.user_id, event: Event::AskedToUnmute { by: h.user_id } }]);
    assert!(w.m.participant(a.user_id).unwrap().audio_muted);
    assert_eq!(w.code(&a, Request::MuteParticipant { user_id: h.user_id }), ErrorCode::Forbidden);
}

#[test]
fn mute_all_spares_moderators_and_co_hosts_cannot_touch_the_host() {
    let mut w = world(open_settings());
    let co = w.joined("Co", Some(Role::CoHost));
    let (a, b) = (w.joined("A", None), w.joined("B", None));
    let fx = w.ok(&co, Request::MuteAll);
    let muted: Vec<Uuid> = events(&fx)
        .iter()
        .filter_map(|e| match e {
            Event::Muted { user_id, muted: true, .. } => Some(*user_id),
            _ => None,
        })
        .collect();
    assert_eq!(muted.len(), 2);
    assert!(muted.contains(&a.user_id) && muted.contains(&b.user_id));
    assert!(!w.m.participant(w.host.user_id).unwrap().audio_muted);
    let host = w.host.user_id;
    assert_eq!(w.code(&co, Request::MuteParticipant { user_id: host }), ErrorCode::Forbidden);
    assert_eq!(w.code(&co, Request::Remove { user_id: host }), ErrorCode::Forbidden);
    assert_eq!(w.code(&co, Request::EndMeeting), ErrorCode::Forbidden);
    assert_eq!(w.code(&co, Request::SetRole { user_id: a.user_id, role: Role::CoHost }), ErrorCode::Forbidden);
}

#[test]
fn hands_video_and_roles() {
    let mut w = world(open_settings());
    let a = w.joined("A", None);
    let b = w.joined("B", None);
    w.ok(&a, Request::RaiseHand);
    assert!(w.m.participant(a.user_id).unwrap().hand_raised);
    assert_eq!(w.code(&b, Request::LowerHand { user_id: Some(a.user_id) }), ErrorCode::Forbidden);
    let h = w.host.clone();
    let fx = w.ok(&h, Request::LowerHand { user_id: Some(a.user_id) });
    assert!(events(&fx).contains(&&Event::HandLowered { user_id: a.user_id, by: Some(h.user_id) }));
    w.ok(&b, Request::Video { on: false });
    assert!(!w.m.participant(b.user_id).unwrap().video_on);

    let fx = w.ok(&h, Request::SetRole { user_id: a.user_id, role: Role::CoHost });
    assert!(fx.contains(&Effect::PersistRole { user_id: a.user_id, role: Role::CoHost }));
    assert_eq!(w.m.participant(a.user_id).unwrap().role, Role::CoHost);
    w.ok(&a, Request::AdmitAll);
    assert_eq!(w.code(&h, Request::SetRole { user_id: a.user_id, role: Role::Host }), ErrorCode::NotAllowed);
    assert_eq!(w.code(&h, Request::SetRole { user_id: h.user_id, role: Role::Attendee }), ErrorCode::NotAllowed);
}

#[test]
fn chat_goes_to_the_room_or_one_person_and_can_be_disabled() {
    let mut w = world(open_settings());
    let a = w.joined("A", None);
    let b = w.joined("B", None);
    let fx = w.ok(&a, Request::Chat { text: "hello".into(), to: None });
    assert!(matches!(&fx[0], Effect::PersistChat(m) if m.seq == 1 && m.text == "hello"));
    assert!(matches!(&fx[1], Effect::Broadcast { scope: Scope::Room(None), event: Event::Chat { .. } }));
    let fx = w.ok(&a, Request::Chat { text: "psst".into(), to: Some(b.user_id) });
    assert!(matches!(&fx[1], Effect::Send { to, .. } if *to == b.user_id));
    // Private messages appear only in the snapshots of sender and recipient.
    let host = w.host.user_id;
    assert_eq!(w.m.snapshot(host).chat.len(), 1);
    assert_eq!(w.m.snapshot(b.user_id).chat.len(), 2);
    assert_eq!(w.code(&a, Request::Chat { text: "x".into(), to: Some(Uuid::new_v4()) }), ErrorCode::UserNotFound);

    let h = w.host.clone();
    assert_eq!(w.code(&a, Request::SetChat { enabled: false }), ErrorCode::Forbidden);
    w.ok(&h, Request::SetChat { enabled: false });
    assert_eq!(w.code(&a, Request::Chat { text: "x".into(), to: None }), ErrorCode::ChatDisabled);
    w.ok(&h, Request::Chat { text: "moderators still may".into(), to: None });
}

#[test]
fn one_screen_sharer_at_a_time_within_policy() {
    let mut w = world(open_settings());
    let a = w.joined("A", None);
    assert_eq!(w.code(&a, Request::ScreenShareStart), ErrorCode::NotAllowed, "host_only by default");

    let mut w = world(MeetingSettings {
        waiting_room: false,
        screen_share: ScreenSharePolicy::All,
        ..MeetingSettings::default()
    });
    let a = w.joined("A", None);
    let b = w.joined("B", None);
    w.ok(&a, Request::ScreenShareStart);
    assert_eq!(w.code(&b, Request::ScreenShareStart), ErrorCode::ScreenShareBusy);
    assert_eq!(w.code(&b, Request::ScreenShareStop), ErrorCode::Forbidden);
    // The sharer leaving stops the share.
    let fx = w.ok(&a, Request::Leave);
    assert!(events(&fx).contains(&&Event::ScreenShareStopped { user_id: a.user_id }));
    w.ok(&b, Request::ScreenShareStart);
    let h = w.host.clone();
    let fx = w.ok(&h, Request::ScreenShareStop);
    assert!(events(&fx).contains(&&Event::ScreenShareStopped { user_id: b.user_id }), "a moderator may stop it");
}

#[test]
fn removed_people_cannot_come_back() {
    let mut w = world(open_settings());
    let a = w.joined("A", None);
    let h = w.host.clone();
    let fx = w.ok(&h, Request::Remove { user_id: a.user_id });
    assert!(fx.contains(&Effect::Detach { user_id: a.user_id, reason: LeaveReason::Removed }));
    assert!(events(&fx).contains(&&Event::ParticipantLeft { user_id: a.user_id, reason: LeaveReason::Removed }));
    assert_eq!(w.join(&a).unwrap_err().0, ErrorCode::RemovedFromMeeting);
    assert_eq!(w.code(&h, Request::Remove { user_id: h.user_id }), ErrorCode::NotAllowed);
}

#[test]
fn breakout_rooms_round_trip() {
    let mut w = world(open_settings());
    let (a, b, c) = (w.joined("A", None), w.joined("B", None), w.joined("C", None));
    let h = w.host.clone();
    assert_eq!(w.code(&h, Request::BreakoutsOpen), ErrorCode::NoBreakouts);
    assert_eq!(w.code(&a, Request::BreakoutsCreate { count: Some(2), assignments: None }), ErrorCode::Forbidden);
    w.ok(&h, Request::BreakoutsCreate { count: Some(2), assignments: None });
    w.ok(&h, Request::BreakoutsOpen);
    let rooms: Vec<Option<u32>> =
        [a.user_id, b.user_id, c.user_id].iter().map(|u| w.m.participant(*u).unwrap().room).collect();
    assert!(rooms.iter().all(|r| r.is_some()), "{rooms:?}");
    assert_eq!(w.m.participant(h.user_id).unwrap().room, None, "moderators stay in the main room");
    assert_eq!(w.code(&h, Request::BreakoutsCreate { count: Some(3), assignments: None }), ErrorCode::NotAllowed);

    // Chat stays inside a room.
    let room_a = w.m.participant(a.user_id).unwrap().room;
    let fx = w.ok(&a, Request::Chat { text: "in room".into(), to: None });
    assert!(matches!(&fx[1], Effect::Broadcast { scope: Scope::Room(r), .. } if *r == room_a));
    assert!(w.m.audience(Scope::Room(room_a)).contains(&a.user_id));
    assert!(!w.m.audience(Scope::Room(room_a)).contains(&h.user_id));

    assert_eq!(w.code(&b, Request::BreakoutJoin { room: 9 }), ErrorCode::InvalidRoom);
    w.ok(&b, Request::BreakoutJoin { room: 1 });
    assert_eq!(w.m.participant(b.user_id).unwrap().room, Some(1));
    w.ok(&c, Request::BreakoutReturn);
    assert_eq!(w.m.participant(c.user_id).unwrap().room, None);
    w.ok(&h, Request::BreakoutsBroadcast { text: "2 minutes".into() });
    let fx = w.ok(&h, Request::BreakoutsClose);
    assert!(events(&fx).contains(&&Event::BreakoutsClosed));
    assert!([a.user_id, b.user_id, c.user_id].iter().all(|u| w.m.participant(*u).unwrap().room.is_none()));
    assert_eq!(w.code(&h, Request::BreakoutsClose), ErrorCode::NoBreakouts);

    let ghost = Uuid::new_v4();
    let assignments = [(a.user_id, 1), (ghost, 2)].into_iter().collect();
    assert_eq!(
        w.code(&h, Request::BreakoutsCreate { count: None, assignments: Some(assignments) }),
        ErrorCode::UserNotFound
    );
}

#[test]
fn the_host_ends_the_meeting_with_analytics() {
    let mut w = world(MeetingSettings::default());
    let h = w.host.clone();
    let a = caller("A", None);
    w.join(&a).unwrap();
    // The meeting started at T0; host and A are both in from T0+1 s (admitted).
    w.ok(&h, Request::Admit { user_id: a.user_id });
    let waiting = caller("W", None);
    w.join(&waiting).unwrap();
    let a_leaves = w.m.handle(T0 + 3000, &a, &Request::Leave);
    assert!(a_leaves.reply.unwrap().is_ok());
    let o = w.m.handle(T0 + 5000, &h, &Request::EndMeeting);
    assert!(o.reply.unwrap().is_ok());
    let fx = o.effects;
    assert!(fx.contains(&Effect::Detach { user_id: h.user_id, reason: LeaveReason::MeetingEnded }));
    let told: Vec<Uuid> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, event: Event::MeetingEnded { .. } } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(told, vec![h.user_id, waiting.user_id], "everyone still connected is told, by name");
    assert!(
        fx.contains(&Effect::Detach { user_id: waiting.user_id, reason: LeaveReason::MeetingEnded }),
        "the waiting room is told too"
    );
    let Some(Effect::Ended { reason, analytics }) = fx.last() else { panic!("{fx:?}") };
    assert_eq!(*reason, EndReason::HostEnded);
    assert_eq!(analytics.total_participants, 2);
    assert_eq!(analytics.peak_participants, 2);
    assert_eq!(analytics.duration_ms, 5000);
    // Nobody for 1 s, 2 people for 2 s, 1 for 2 s: 6 person-seconds over 5 s.
    assert_eq!(analytics.avg_participants, 1.2);
    assert!(w.m.is_ended());
    assert_eq!(w.code(&h, Request::Heartbeat), ErrorCode::MeetingNotActive);
}

#[test]
fn the_last_one_out_starts_the_grace_period() {
    let mut w = world(open_settings());
    let a = w.joined("A", None);
    let host = w.host.user_id;
    let o = w.m.disconnected(T0 + 2000, host, LeaveReason::Timeout);
    assert!(events(&o.effects).contains(&&Event::ParticipantLeft { user_id: host, reason: LeaveReason::Timeout }));
    assert!(!o.effects.contains(&Effect::BecameEmpty));
    let o = w.m.disconnected(T0 + 2500, a.user_id, LeaveReason::Disconnected);
    assert!(o.effects.contains(&Effect::BecameEmpty));
    // Somebody coming back during the grace period keeps the meeting alive.
    let b = w.joined("B", None);
    assert_eq!(w.m.grace_expired(T0 + 9000), Outcome::default());
    w.m.disconnected(T0 + 9500, b.user_id, LeaveReason::Left);
    let o = w.m.grace_expired(T0 + 20_000);
    assert!(matches!(o.effects.last(), Some(Effect::Ended { reason: EndReason::Empty, .. })));
}

#[test]
fn snapshots_show_the_waiting_room_to_moderators_only() {
    let mut w = world(MeetingSettings::default());
    let x = caller("X", None);
    w.join(&x).unwrap();
    let h = w.host.clone();
    assert_eq!(w.m.snapshot(h.user_id).waiting.len(), 1);
    let a = caller("A", None);
    w.join(&a).unwrap();
    w.ok(&h, Request::Admit { user_id: a.user_id });
    assert!(w.m.snapshot(a.user_id).waiting.is_empty());
    let o = w.req(&a, Request::Join { meeting_id: w.m.meeting_id(), password: None, display_name: None });
    assert!(matches!(o.reply, Some(Ok(Answer::Entered(_)))), "rejoining is idempotent");
    assert!(o.effects.is_empty());
}

#[test]
fn a_restored_meeting_is_the_meeting_it_was() {
    let mut w = world(MeetingSettings { screen_share: ScreenSharePolicy::All, ..MeetingSettings::default() });
    let h = w.host.clone();
    let a = caller("A", Some(Role::Panelist));
    w.join(&a).unwrap();
    w.ok(&h, Request::Admit { user_id: a.user_id });
    let (x, y) = (caller("X", None), caller("Y", None));
    w.join(&x).unwrap();
    w.join(&y).unwrap();
    w.ok(&a, Request::RaiseHand);
    w.ok(&a, Request::ScreenShareStart);
    w.ok(&a, Request::Chat { text: "before the crash".into(), to: None });
    w.ok(&h, Request::Lock { locked: true });
    w.ok(&h, Request::BreakoutsCreate { count: Some(1), assignments: None });
    let saved = Snapshot {
        participants: w.m.participants.values().cloned().collect(),
        waiting: w.m.waiting.iter().cloned().collect(),
        flags: Some(w.m.flags()),
        chat: w.m.chat.iter().cloned().collect(),
    };
    let restored = LiveMeeting::restore(w.m.cfg.clone(), T0, T0 + 5000, saved);
    assert_eq!(restored.snapshot(h.user_id), w.m.snapshot(h.user_id), "same view for the host");
    assert_eq!(restored.participant(a.user_id).unwrap().role, Role::Panelist, "roles kept");
    assert_eq!(
        restored.waiting.iter().map(|v| v.user_id).collect::<Vec<_>>(),
        vec![x.user_id, y.user_id],
        "waiting order kept"
    );
    let mut r = restored;
    let o = r.handle(T0 + 6000, &a, &Request::Chat { text: "after".into(), to: None });
    assert!(
        matches!(o.reply, Some(Ok(Answer::Reply(ReplyData::ChatSent { message }))) if message.seq == 2),
        "chat numbering continues"
    );
}

#[test]
fn resume_takes_back_a_seat_with_its_role_and_never_creates_one() {
    let mut w = world(MeetingSettings::default()); // waiting room on
    let co = w.joined("Co", Some(Role::CoHost));
    let m = w.m.meeting_id();
    let resume =
        || Request::Resume { meeting_id: m, resume_token: "checked by the connection layer".into(), last_seq: None };
    // The same user on a new connection: back in, no waiting room, role kept.
    let same = Caller { invited_role: None, ..co.clone() };
    match w.req(&same, resume()).reply.unwrap() {
        Ok(Answer::Entered(Entered { you, .. })) => assert_eq!(you.role, Role::CoHost),
        other => panic!("resume should rejoin: {other:?}"),
    }
    // Someone with no seat gets nothing, not even a waiting-room place.
    let stranger = caller("Stranger", None);
    assert_eq!(w.code(&stranger, resume()), ErrorCode::ResumeFailed);
    assert!(!w.m.is_waiting(stranger.user_id));
    // A removed participant cannot resume either.
    let h = w.host.clone();
    w.ok(&h, Request::Remove { user_id: co.user_id });
    assert_eq!(w.code(&same, resume()), ErrorCode::ResumeFailed);
}

#[test]
fn a_logged_event_reaches_whom_it_was_for() {
    let mut w = world(open_settings());
    let a = w.joined("A", None);
    let h = w.host.clone();
    let stranger = caller("S", None);
    let m = &w.m;
    assert!(m.reaches(Audience::Everyone, a.user_id));
    assert!(!m.reaches(Audience::Everyone, stranger.user_id), "only participants");
    assert!(!m.reaches(Audience::EveryoneExcept { user_id: a.user_id }, a.user_id));
    assert!(m.reaches(Audience::EveryoneExcept { user_id: a.user_id }, h.user_id));
    assert!(m.reaches(Audience::Moderators, h.user_id));
    assert!(!m.reaches(Audience::Moderators, a.user_id));
    assert!(m.reaches(Audience::Room { room: None }, a.user_id));
    assert!(!m.reaches(Audience::Room { room: Some(1) }, a.user_id));
    assert!(m.reaches(Audience::User { user_id: stranger.user_id }, stranger.user_id), "one-to-one: anyone addressed");
    assert!(!m.reaches(Audience::User { user_id: h.user_id }, a.user_id));
    assert_eq!(Audience::from(Scope::Room(Some(2))), Audience::Room { room: Some(2) });
}

fn record_effects(fx: &[Effect]) -> Vec<(bool, Uuid)> {
    fx.iter().filter_map(|e| if let Effect::Record { on, by } = e { Some((*on, *by)) } else { None }).collect()
}

fn recording_settings() -> MeetingSettings {
    MeetingSettings { recording_allowed: true, ..open_settings() }
}

#[test]
fn recording_on_and_off_drive_capture_once_each() {
    let mut w = world(recording_settings());
    let h = w.host.clone();
    let fx = w.ok(&h, Request::Recording { on: true });
    assert_eq!(record_effects(&fx), vec![(true, h.user_id)]);
    assert!(w.m.flags().recording && w.m.flags().recording_by == Some(h.user_id));
    assert!(record_effects(&w.ok(&h, Request::Recording { on: true })).is_empty(), "already on: nothing to start");
    assert_eq!(record_effects(&w.ok(&h, Request::Recording { on: false })), vec![(false, h.user_id)]);
    assert_eq!(w.m.flags().recording_by, None);
}

#[test]
fn recording_is_refused_to_attendees_and_where_the_meeting_forbids_it() {
    let mut w = world(recording_settings());
    let a = w.joined("Ann", None);
    assert_eq!(w.code(&a, Request::Recording { on: true }), ErrorCode::Forbidden);
    let mut w = world(MeetingSettings { recording_allowed: false, ..open_settings() });
    let h = w.host.clone();
    assert_eq!(w.code(&h, Request::Recording { on: true }), ErrorCode::RecordingNotAllowed);
}

#[test]
fn recording_stops_when_its_host_leaves_without_a_co_host_and_not_otherwise() {
    let mut w = world(recording_settings());
    let h = w.host.clone();
    let a = w.joined("Ann", None);
    let c = w.joined("Cy", Some(Role::CoHost));
    w.ok(&h, Request::Recording { on: true });
    // A co-host remains: recording goes on.
    let fx = w.m.disconnected(T0 + 2000, h.user_id, LeaveReason::Left).effects;
    assert!(record_effects(&fx).is_empty());
    assert!(w.m.flags().recording);
    // The co-host started nothing: their leaving does not stop it either.
    let fx = w.m.disconnected(T0 + 3000, c.user_id, LeaveReason::Left).effects;
    assert!(record_effects(&fx).is_empty());
    let _ = a;

    let mut w = world(recording_settings());
    let h = w.host.clone();
    let _a = w.joined("Ann", None);
    w.ok(&h, Request::Recording { on: true });
    let fx = w.m.disconnected(T0 + 2000, h.user_id, LeaveReason::Left).effects;
    assert_eq!(record_effects(&fx), vec![(false, h.user_id)]);
    assert!(events(&fx).contains(&&Event::RecordingStopped { by: h.user_id }));
    assert!(!w.m.flags().recording);
}

#[test]
fn a_ready_recording_is_told_to_the_moderators_until_the_meeting_ends() {
    let mut w = world(recording_settings());
    let h = w.host.clone();
    let rid = Uuid::new_v4();
    let fx = w.m.recording_ready(rid, 12).effects;
    assert_eq!(
        fx,
        vec![Effect::Broadcast {
            scope: Scope::Moderators,
            event: Event::RecordingReady { recording_id: rid, duration_seconds: 12 }
        }]
    );
    w.ok(&h, Request::EndMeeting);
    assert!(w.m.recording_ready(rid, 12).effects.is_empty(), "an ended meeting tells nobody");
}

#[test]
fn ending_the_meeting_stops_the_recording_before_the_end() {
    let mut w = world(recording_settings());
    let h = w.host.clone();
    w.ok(&h, Request::Recording { on: true });
    let fx = w.ok(&h, Request::EndMeeting);
    let record = fx.iter().position(|e| matches!(e, Effect::Record { on: false, .. }));
    let ended = fx.iter().position(|e| matches!(e, Effect::Ended { .. }));
    assert!(record.is_some() && record < ended, "{fx:?}");
}

#[test]
fn who_started_the_recording_survives_a_restart() {
    let mut w = world(recording_settings());
    let h = w.host.clone();
    w.ok(&h, Request::Recording { on: true });
    let flags = w.m.flags();
    let json = serde_json::to_string(&flags).unwrap();
    let back: DurableFlags = serde_json::from_str(&json).unwrap();
    assert_eq!(back.recording_by, Some(h.user_id));
    // Flags written before the field existed still read.
    let old = json.replace(&format!(",\"recording_by\":\"{}\"", h.user_id), "");
    assert_eq!(serde_json::from_str::<DurableFlags>(&old).unwrap().recording_by, None);
}

#[test]
fn a_moderator_stops_a_camera_and_hands_keep_the_order_they_went_up_in() {
    let mut w = world(open_settings());
    let (a, b) = (w.joined("A", None), w.joined("B", None));
    let h = w.host.clone();
    let fx = w.ok(&h, Request::StopVideo { user_id: a.user_id });
    assert!(events(&fx).contains(&&Event::VideoChanged { user_id: a.user_id, on: false, by: Some(h.user_id) }));
    assert!(!w.m.participant(a.user_id).unwrap().video_on);
    assert!(w.ok(&h, Request::StopVideo { user_id: a.user_id }).is_empty(), "already off: nothing to tell");
    assert_eq!(w.code(&b, Request::StopVideo { user_id: a.user_id }), ErrorCode::Forbidden, "not a moderator");
    let co = w.joined("Co", Some(Role::CoHost));
    assert_eq!(w.code(&co, Request::StopVideo { user_id: h.user_id }), ErrorCode::Forbidden, "not the host's");
    // Only the participant turns it back on.
    let fx = w.ok(&a, Request::Video { on: true });
    assert!(events(&fx).contains(&&Event::VideoChanged { user_id: a.user_id, on: true, by: None }));

    let t = |w: &mut World, who: &Caller, at: i64, r: Request| w.m.handle(at, who, &r);
    t(&mut w, &b, T0 + 5_000, Request::RaiseHand);
    t(&mut w, &a, T0 + 7_000, Request::RaiseHand);
    let at = |w: &World, c: &Caller| w.m.participant(c.user_id).unwrap().hand_raised_at;
    assert_eq!((at(&w, &b), at(&w, &a)), (Some(T0 + 5_000), Some(T0 + 7_000)), "B first, then A");
    let again = t(&mut w, &b, T0 + 9_000, Request::RaiseHand);
    assert!(again.effects.is_empty() && at(&w, &b) == Some(T0 + 5_000), "raising again keeps one's place");
    t(&mut w, &b, T0 + 10_000, Request::LowerHand { user_id: None });
    assert_eq!(at(&w, &b), None);
}
