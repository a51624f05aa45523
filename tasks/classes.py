"""Label vocabularies, in a module with no dependencies so generators and GPU scripts can import them."""

# SurgVU's surgical steps, in the challenge's official order (class index = position).
STEP_CLASSES: tuple[str, ...] = (
    "range_of_motion",
    "rectal_artery_vein",
    "retraction_collision_avoidance",
    "skills_application",
    "suspensory_ligaments",
    "suturing",
    "uterine_horn",
    "other",
)
